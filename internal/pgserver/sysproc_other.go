//go:build unix && !linux

package pgserver

import "syscall"

// SysProcAttr runs a child as cred when set.
func SysProcAttr(cred *RunAs, server bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{}
	if cred != nil {
		a.Credential = &syscall.Credential{Uid: cred.UID, Gid: cred.GID, NoSetGroups: true}
	}
	return a
}

// GroupProcAttr runs a long-lived child as cred (when set) in a process
// group of its own, so that one signal reaches it and all its descendants.
func GroupProcAttr(cred *RunAs) *syscall.SysProcAttr {
	a := SysProcAttr(cred, false)
	a.Setpgid = true
	return a
}
