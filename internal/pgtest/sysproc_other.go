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
