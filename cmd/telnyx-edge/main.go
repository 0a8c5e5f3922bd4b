// Command telnyx-edge manages Telnyx Edge Compute KV namespaces and keys
// (on the hosted service or a kvd), func.toml bindings and credentials.
// Run "telnyx-edge --help" for the commands.
package main

import (
	"context"
	"os"

	"github.com/edgekv/kv/internal/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
