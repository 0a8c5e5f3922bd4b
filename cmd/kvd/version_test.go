package main

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version", "-version"} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), []string{arg}, os.Getenv, &stdout, &stderr)
		if code != 0 || !strings.HasPrefix(stdout.String(), "kvd ") || !strings.Contains(stdout.String(), runtime.Version()) || stderr.Len() != 0 {
			t.Errorf("kvd %s: exit %d, stdout %q, stderr %q; want a version line with the Go version", arg, code, stdout.String(), stderr.String())
		}
	}
}
