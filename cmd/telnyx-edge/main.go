// Command telnyx-edge manages Telnyx Edge Compute KV namespaces and keys
// (on the hosted service or a kvd), func.toml bindings and credentials.
// Run "telnyx-edge --help" for the commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgekv/kv/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
