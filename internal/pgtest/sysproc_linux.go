package pgtest

import "syscall"

// sysProcAttr runs a child as cred (when set) and, for the server, asks the
// kernel to stop it with an immediate shutdown (SIGQUIT) if the test binary
// dies without running Main's cleanup.
func sysProcAttr(cred *runAs, server bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{}
	if cred != nil {
		a.Credential = &syscall.Credential{Uid: cred.uid, Gid: cred.gid, NoSetGroups: true}
	}
	if server {
		a.Pdeathsig = syscall.SIGQUIT
	}
	return a
}
