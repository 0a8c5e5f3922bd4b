// Package crashtest holds reliability tests of kvd as a process: the real
// binary is killed with SIGKILL at random moments while clients write, or
// the PostgreSQL server under it is crashed and restarted while kvd keeps
// running, and every acknowledged write must survive; histories are checked
// for linearizability with porcupine (see internal/linearizability). The
// package has no code of its own outside its tests.
package crashtest
