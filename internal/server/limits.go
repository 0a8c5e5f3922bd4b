package server

import "syscall"

// Descriptors: kvd caps its API connections below the process's limit on
// open files, keeping a reserve for the storage engine's files (Pebble's
// table cache is sized to its share), the database pool, the listeners
// and logs, so that a flood of connections can never make a write fail
// for want of a file descriptor.

// DescriptorLimit is the process's soft limit on open files (0 if it
// cannot be read).
func DescriptorLimit() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return int(min(l.Cur, 1<<30))
}

// RaiseDescriptorLimit raises the soft limit on open files to the hard
// limit and returns the soft limit in force.
func RaiseDescriptorLimit() (int, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return DescriptorLimit(), err
		}
	}
	return DescriptorLimit(), nil
}

// EngineFiles is how many files the embedded engine may keep open under
// a descriptor limit of limit: a quarter of it, from 32 to 1000.
func EngineFiles(limit int) int {
	if limit <= 0 {
		return 1000
	}
	return min(max(limit/4, 32), 1000)
}

// otherFiles is the reserve for everything but API connections and the
// engine's table cache: its log and manifest, the database pool, the
// listeners, the process's own files.
const otherFiles = 128

// maxDefaultConnections bounds the default cap whatever the descriptor
// limit, for memory: each connection costs about 20 KiB while idle.
const maxDefaultConnections = 10000

// DefaultMaxConnections is the cap on API connections under a descriptor
// limit of limit.
func DefaultMaxConnections(limit int) int {
	if limit <= 0 {
		return maxDefaultConnections
	}
	return min(max(limit-EngineFiles(limit)-otherFiles, 8), maxDefaultConnections)
}

// DefaultHeaderBudget is the memory for request headers being received
// beyond 8 KiB per request: 32 MiB.
const DefaultHeaderBudget = 32 << 20
