package pgserver

import "syscall"

// SysProcAttr runs a child as cred (when set) and, for the server, asks the
// kernel to stop it with an immediate shutdown (SIGQUIT) if the test binary
// dies without running Main's cleanup.
func SysProcAttr(cred *RunAs, server bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{}
	if cred != nil {
		a.Credential = &syscall.Credential{Uid: cred.UID, Gid: cred.GID, NoSetGroups: true}
	}
	if server {
		a.Pdeathsig = syscall.SIGQUIT
	}
	return a
}

// GroupProcAttr runs a long-lived child as cred (when set) in a process
// group of its own, so that one signal reaches it and all its descendants,
// and asks the kernel to send it SIGTERM, a request to stop, if the test
// binary dies.
func GroupProcAttr(cred *RunAs) *syscall.SysProcAttr {
	a := SysProcAttr(cred, false)
	a.Setpgid = true
	a.Pdeathsig = syscall.SIGTERM
	return a
}
