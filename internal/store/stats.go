package store

import (
	"context"
	"time"
)

// JobBacklog is the lifecycle work waiting in an engine: namespaces whose
// status is pending or deleting.
type JobBacklog struct {
	Pending, Deleting int
	// Oldest is the UpdatedAt (the time it entered its status) of the
	// namespace that has waited longest; zero when none waits.
	Oldest time.Time
}

// Backlogger is an optional capability of an engine, found by type
// assertion: it reports the lifecycle backlog for metrics. It only reads,
// and is safe for concurrent use with every other method.
type Backlogger interface {
	// JobBacklog counts the namespaces that wait for the lifecycle worker,
	// in every organization, leased or not.
	JobBacklog(ctx context.Context) (JobBacklog, error)
}
