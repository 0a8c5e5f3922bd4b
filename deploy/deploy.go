// Package deploy holds what an operator installs beside the kvd binary: the
// systemd unit (kvd.service), an example of its environment file
// (kvd.env.example) and a Grafana dashboard of kvd's metrics
// (grafana/kvd.json). The files are embedded so that tests check the very
// bytes that ship.
package deploy

import _ "embed"

// Unit is deploy/kvd.service.
//
//go:embed kvd.service
var Unit string

// EnvExample is deploy/kvd.env.example.
//
//go:embed kvd.env.example
var EnvExample string

// Dashboard is deploy/grafana/kvd.json.
//
//go:embed grafana/kvd.json
var Dashboard []byte
