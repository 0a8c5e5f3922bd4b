package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
)

func (a *app) newBulkCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "bulk", Short: "Write or delete many keys in batches", Args: groupArgs, RunE: groupRun,
		Example: `  telnyx-edge storage kv bulk put my-cache keys.ndjson
  telnyx-edge storage kv bulk delete my-cache stale-keys.txt --yes`}
	cmd.AddCommand(a.newBulkPutCommand(), a.newBulkDeleteCommand())
	return cmd
}

// bulkFlags are the flags both bulk commands share.
type bulkFlags struct {
	concurrency int
}

func (f *bulkFlags) add(cmd *cobra.Command) {
	cmd.Flags().IntVar(&f.concurrency, "concurrency", 4, "batches sent at once, 1 to 16")
}

func (f *bulkFlags) check() error {
	if f.concurrency < 1 || f.concurrency > 16 {
		return usagef("--concurrency must be from 1 to 16; got %d", f.concurrency)
	}
	return nil
}

func (a *app) newBulkPutCommand() *cobra.Command {
	var flags bulkFlags
	cmd := &cobra.Command{
		Use:   "put [NS] FILE|-",
		Short: "Write the keys of an NDJSON file (export's format) in batches",
		Long: `Write the keys of an NDJSON file in the export format (the first line the
kv-export/1 header, then one key a line, with value or value_base64,
content_type and expires_at) in batches of up to 1,000 keys and 16 MiB, each
key on its own (a batch is not atomic). FILE - reads stdin. A key whose
expires_at has passed is skipped; any other gets the remaining time as its
TTL. Two lines with the same key are written in file order.

Every line is checked before it is written; a bad line stops the command
with an error naming it (the lines before it are written). A key the
service refuses is reported on stderr with its line, the others are
written, and the command exits 1. On a terminal a progress bar shows on
stderr; the summary line says how many keys were written and failed.`,
		Example: `  telnyx-edge storage kv bulk put my-cache keys.ndjson
  telnyx-edge storage kv export old-cache | telnyx-edge storage kv bulk put new-cache -`,
		Args:              argsRange(1, 2),
		ValidArgsFunction: a.completeNS(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := flags.check(); err != nil {
				return err
			}
			return a.runBulk(cmd, args, flags, false)
		},
	}
	flags.add(cmd)
	return cmd
}

func (a *app) newBulkDeleteCommand() *cobra.Command {
	var flags bulkFlags
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete [NS] FILE|- [-y]",
		Short: "Delete the keys listed in a file, one a line, in batches",
		Long: `Delete the keys listed in FILE, one key a line (blank lines are skipped),
in batches of up to 1,000. FILE - reads stdin. A missing key is not an
error; the summary says how many keys were deleted and how many were not
there. An invalid key stops the command with an error naming its line (the
keys before it are deleted).

On a terminal it asks for confirmation; elsewhere, and always when the keys
come from stdin, it refuses unless given -y/--yes (or
TELNYX_EDGE_SKIP_CONFIRMATIONS=1).`,
		Example: `  telnyx-edge storage kv bulk delete my-cache stale-keys.txt
  telnyx-edge storage kv key list my-cache --prefix tmp/ --all -o json | jq -r '.data[].key' | telnyx-edge storage kv bulk delete my-cache - --yes`,
		Args:              argsRange(1, 2),
		ValidArgsFunction: a.completeNS(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := flags.check(); err != nil {
				return err
			}
			file := args[len(args)-1]
			if file == "-" && !yes && a.env.Getenv(EnvSkipConfirmations) != "1" {
				return usagef("refusing to delete without confirmation: stdin holds the keys, so there is no terminal to ask on; pass --yes (or set %s=1)", EnvSkipConfirmations)
			}
			if err := a.confirm(cmd.Context(), yes, "Delete every key listed in %s?", file); err != nil {
				return err
			}
			return a.runBulk(cmd, args, flags, true)
		},
	}
	flags.add(cmd)
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

// runBulk runs bulk put or, with del, bulk delete.
func (a *app) runBulk(cmd *cobra.Command, args []string, flags bulkFlags, del bool) error {
	file := args[len(args)-1]
	in, size, err := a.openImport(file)
	if err != nil {
		return err
	}
	defer in.Close()
	c, err := a.client()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	id, err := a.resolveNS(ctx, c, args[:len(args)-1], 0)
	if err != nil {
		return err
	}
	if _, err := a.readyNamespace(ctx, c, id); err != nil {
		return err
	}
	b := &bulk{a: a, ns: c.Namespace(id), del: del, workers: flags.concurrency, now: a.env.Now}
	return b.run(ctx, in, size)
}

// bulk is one run of bulk put or bulk delete.
type bulk struct {
	a       *app
	ns      *client.Namespace
	del     bool
	workers int
	now     func() time.Time

	mu      sync.Mutex
	st      bulkStats
	failure error // a batch that failed as a whole, or a bad line: stops the run
}

type bulkStats struct {
	written, deleted, absent, expired, failed, batches int
	bytes                                              int64
}

// bulkOp is one key line.
type bulkOp struct {
	line  int
	key   string
	value []byte
	opts  *client.PutOptions // puts only
	size  int                // at least its size in the batch's JSON
}

// bulkFlushAfter is how long a partly filled batch waits for more keys
// from a slow input before it is sent.
const bulkFlushAfter = 500 * time.Millisecond

func (b *bulk) run(ctx context.Context, in io.Reader, size int64) error {
	start := b.now()
	desc := "writing"
	if b.del {
		desc = "deleting"
	}
	bar := b.a.newProgress(size, desc, true, "")
	r := bufio.NewReaderSize(countingReader{in, bar}, 64<<10)

	// A key always goes to the same worker, so the lines of one key are
	// applied in file order; each worker sends one batch at a time.
	queues := make([]chan bulkOp, b.workers)
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan bulkOp, 64)
		wg.Add(1)
		go func(q chan bulkOp) {
			defer wg.Done()
			b.work(ctx, q)
		}(queues[i])
	}
	seed := maphash.MakeSeed()
	read := make(chan error, 1)
	go func() {
		send := func(op bulkOp) bool {
			q := queues[maphash.String(seed, op.key)%uint64(len(queues))]
			select {
			case q <- op:
				return true
			case <-ctx.Done():
				return false
			}
		}
		var err error
		if b.del {
			err = b.readKeys(ctx, r, send)
		} else {
			err = b.readRecords(ctx, r, send)
		}
		for _, q := range queues {
			close(q)
		}
		read <- err
	}()
	var readErr error
	select {
	case readErr = <-read:
	case <-ctx.Done():
	}
	wg.Wait()
	bar.done()

	b.mu.Lock()
	st, failure := b.st, b.failure
	b.mu.Unlock()
	if readErr != nil && failure == nil {
		failure = readErr
	}
	var summary string
	if b.del {
		summary = fmt.Sprintf("Deleted %s from %s in %s (%s in %s); %s not there, failed %s",
			plural(st.deleted, "key"), b.a.nsLabel(b.ns.ID()), elapsed(b.now().Sub(start)), plural(st.deleted+st.absent+st.failed, "line"), batches(st.batches),
			thousands(int64(st.absent)), thousands(int64(st.failed)))
	} else {
		summary = fmt.Sprintf("Wrote %s, %s bytes, to %s in %s (%s); skipped %s%s, failed %s",
			plural(st.written, "key"), thousands(st.bytes), b.a.nsLabel(b.ns.ID()), elapsed(b.now().Sub(start)), batches(st.batches),
			thousands(int64(st.expired)), reasons(st.expired, "expired"), thousands(int64(st.failed)))
	}
	b.a.hint("%s", summary)
	return transferOutcome(ctx, failure, st.failed, "key")
}

// readRecords reads an export file and sends each key line as a put.
func (b *bulk) readRecords(ctx context.Context, r *bufio.Reader, send func(bulkOp) bool) error {
	n := 0
	header := false
	for {
		if ctx.Err() != nil || b.stopped() {
			return nil
		}
		line, err := readLine(r, false)
		if err == io.EOF {
			break
		}
		n++
		if errors.Is(err, errLineTooLong) {
			return fmt.Errorf("line %d is over %d MiB; kv-export/1 lines are at most 4 MiB", n, maxExportLine>>20)
		}
		if err != nil {
			return fmt.Errorf("reading the input: %w", err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if !header {
			if err := checkHeader(line); err != nil {
				return fmt.Errorf("line %d: %w", n, err)
			}
			header = true
			continue
		}
		j, err := parseRecord(line)
		if err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		opts := &client.PutOptions{ContentType: j.ctype}
		if !j.expires.IsZero() {
			ttl, ok := client.RemainingTTL(j.expires, b.now())
			if !ok {
				b.count(func(st *bulkStats) { st.expired++ })
				continue
			}
			opts.TTL = ttl
		}
		if !send(bulkOp{line: n, key: j.key, value: j.value, opts: opts, size: putSize(j.key, j.value, j.ctype)}) {
			return nil
		}
	}
	if !header {
		return errors.New("the input is empty; expected a kv-export/1 file, as export writes it")
	}
	return nil
}

// readKeys reads one key a line and sends each as a delete.
func (b *bulk) readKeys(ctx context.Context, r *bufio.Reader, send func(bulkOp) bool) error {
	n := 0
	for {
		if ctx.Err() != nil || b.stopped() {
			return nil
		}
		line, err := readLine(r, false)
		if err == io.EOF {
			return nil
		}
		n++
		if errors.Is(err, errLineTooLong) {
			return fmt.Errorf("line %d is over %d MiB; a key is at most %d characters", n, maxExportLine>>20, kv.MaxKeyLen)
		}
		if err != nil {
			return fmt.Errorf("reading the input: %w", err)
		}
		key := string(bytes.TrimSpace(line))
		if key == "" {
			continue
		}
		if err := kv.ValidateKey(key); err != nil {
			return fmt.Errorf("line %d: key %.80q: %s", n, key, message(err))
		}
		if !send(bulkOp{line: n, key: key, size: len(key) + 32}) {
			return nil
		}
	}
}

// putSize is at least the size of a put in a batch's JSON: the value as
// JSON text (at most six bytes a byte) or base64, the key and content type
// escaped, and the op's fixed parts.
func putSize(key string, value []byte, ctype string) int {
	return 96 + jsonSize(key) + jsonSize(ctype) + max(jsonSize(string(value)), (len(value)+2)/3*4)
}

// jsonSize bounds the length of s as a JSON string's contents.
func jsonSize(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20:
			n += 6
		case c == '"' || c == '\\':
			n += 2
		case c == 0xe2: // U+2028 and U+2029 are escaped: 3 bytes become 6
			n += 4
		default:
			n++
		}
	}
	return n
}

// work sends the ops of one queue in batches, each full one (1,000 ops or
// 16 MiB) at once and a partial one when the input pauses or ends.
func (b *bulk) work(ctx context.Context, q chan bulkOp) {
	var pending []bulkOp
	size := 0
	flush := func() {
		if len(pending) > 0 && ctx.Err() == nil && !b.stopped() {
			b.send(ctx, pending)
		}
		pending, size = nil, 0
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case op, ok := <-q:
			if !ok {
				flush()
				return
			}
			if len(pending) > 0 && (len(pending) == client.MaxBatchOps || size+op.size+1 > client.MaxBatchBody-64) {
				flush()
			}
			pending = append(pending, op)
			size += op.size + 1
			timer.Reset(bulkFlushAfter)
		case <-timer.C:
			flush()
		case <-ctx.Done():
			return
		}
	}
}

// send writes one batch and counts what happened to each of its ops.
func (b *bulk) send(ctx context.Context, ops []bulkOp) {
	batch := b.ns.Bulk()
	for _, op := range ops {
		if b.del {
			batch.Delete(op.key)
		} else {
			batch.Put(op.key, op.value, op.opts)
		}
	}
	res, err := batch.Run(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return // interrupted: the summary says what was done
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.failure == nil {
			what := "writing"
			if b.del {
				what = "deleting"
			}
			err = b.a.notFound(err, b.ns.ID(), "")
			b.failure = &explained{msg: fmt.Sprintf("%s a batch of %s (line %d first): %s; the batches before it were applied, none after", what, plural(len(ops), "key"), ops[0].line, message(err)), err: err}
		}
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st.batches++
	for i, r := range res.Results {
		op := ops[i]
		switch {
		case r.Err != nil:
			b.st.failed++
			b.a.hint("line %d: key %s: %s", op.line, op.key, oneLine(message(r.Err)))
		case b.del && r.Deleted:
			b.st.deleted++
		case b.del:
			b.st.absent++
		default:
			b.st.written++
			b.st.bytes += int64(len(op.value))
		}
	}
}

// batches counts batches for a summary.
func batches(n int) string {
	if n == 1 {
		return "1 batch"
	}
	return thousands(int64(n)) + " batches"
}

func (b *bulk) count(f func(*bulkStats)) {
	b.mu.Lock()
	f(&b.st)
	b.mu.Unlock()
}

// stopped reports that a failure has stopped the run.
func (b *bulk) stopped() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failure != nil
}
