//go:build unix && !linux

package pgtest

import "syscall"

// sysProcAttr runs a child as cred when set.
func sysProcAttr(cred *runAs, server bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{}
	if cred != nil {
		a.Credential = &syscall.Credential{Uid: cred.uid, Gid: cred.gid, NoSetGroups: true}
	}
	return a
}

// groupProcAttr runs a long-lived child as cred (when set) in a process
// group of its own, so that one signal reaches it and all its descendants.
func groupProcAttr(cred *runAs) *syscall.SysProcAttr {
	a := sysProcAttr(cred, false)
	a.Setpgid = true
	return a
}
