package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
)

func (a *app) newImportCommand() *cobra.Command {
	var ifAbsent, keepGoing bool
	var concurrency int
	cmd := &cobra.Command{
		Use:   "import [NS] FILE|- [--if-absent] [--keep-going]",
		Short: "Write the keys of a kv-export/1 file (from export) into a namespace",
		Long: `Write the keys of a kv-export/1 NDJSON file, as export writes it, into a
namespace: values, content types and expiries. A key whose expires_at has
passed is skipped; any other gets the remaining time as its TTL, in whole
seconds (at least 1). FILE - reads stdin. Keys are written --concurrency at
a time; two lines with the same key are written in file order.

--if-absent skips keys the namespace has already, so an interrupted import
can be run again to finish it. It uses If-None-Match: * where the server
honours conditional writes (kvd does), and otherwise asks for each key with
a HEAD request first; the summary says which.

Every line is checked before it is written: the header must say
kv-export/1, each key line must be a JSON object with a valid key, a value
or a value_base64 of at most 1 MiB, and at most 4 MiB in all. A bad line
stops the import with an error naming its line: the lines before it are
written, none after it. A write that fails (after the client's retries)
stops it as well, once the writes under way have ended. --keep-going reports bad lines and failed writes,
skips them and goes on; the command then exits 1 if any failed.`,
		Example: `  telnyx-edge storage kv import my-cache my-cache.ndjson
  telnyx-edge storage kv export old-cache | telnyx-edge storage kv import new-cache -
  telnyx-edge storage kv import MY_CACHE backup.ndjson --if-absent`,
		Args:              argsRange(1, 2),
		ValidArgsFunction: a.completeNS(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if concurrency < 1 || concurrency > 64 {
				return usagef("--concurrency must be from 1 to 64; got %d", concurrency)
			}
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
			imp := &importer{a: a, ns: c.Namespace(id), ifAbsent: ifAbsent, keepGoing: keepGoing, workers: concurrency, now: a.env.Now}
			return imp.run(ctx, in, size)
		},
	}
	cmd.Flags().BoolVar(&ifAbsent, "if-absent", false, "skip keys that exist already (to resume an import)")
	cmd.Flags().BoolVar(&keepGoing, "keep-going", false, "report bad lines and failed writes, and go on")
	cmd.Flags().IntVar(&concurrency, "concurrency", 8, "keys written at once, 1 to 64")
	return cmd
}

// openImport opens FILE, or stdin for "-", and returns its size (-1 when
// unknown) for the progress display.
func (a *app) openImport(name string) (io.ReadCloser, int64, error) {
	if name == "-" {
		return io.NopCloser(a.env.Stdin), -1, nil
	}
	f, err := os.Open(a.path(name))
	if err != nil {
		return nil, 0, fmt.Errorf("cannot read %s: %w", name, errors.Unwrap(err))
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		if err == nil && fi.IsDir() {
			f.Close()
			return nil, 0, usagef("%s is a directory; name a kv-export/1 file", name)
		}
		return f, -1, nil
	}
	return f, fi.Size(), nil
}

// importer is one run of import.
type importer struct {
	a                   *app
	ns                  *client.Namespace
	ifAbsent, keepGoing bool
	workers             int
	now                 func() time.Time

	// conditional is set once a write's answer carried an ETag: the
	// server honours If-None-Match, and no HEAD is needed before writes.
	conditional atomic.Bool
	heads       atomic.Int64 // HEAD requests made for --if-absent

	mu      sync.Mutex
	st      importStats
	failure error // the first failure, which stops the import without --keep-going
	reports int   // failures reported on stderr
}

type importStats struct {
	keys, expired, existed, failed int
	bytes                          int64
}

// maxReports bounds the failures --keep-going lists on stderr.
const maxReports = 20

// job is one key line to write.
type job struct {
	line    int
	key     string
	value   []byte
	ctype   string
	expires time.Time // zero: never
}

func (im *importer) run(ctx context.Context, in io.Reader, size int64) error {
	start := im.now()
	bar := im.a.newProgress(size, "importing", true, "")
	r := bufio.NewReaderSize(countingReader{in, bar}, 64<<10)

	// One queue per worker, a key always to the same one: lines of one key
	// are written in file order, and memory stays a few values per worker.
	queues := make([]chan job, im.workers)
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan job, 1)
		wg.Add(1)
		go func(q chan job) {
			defer wg.Done()
			for {
				select {
				case j, ok := <-q:
					if !ok {
						return
					}
					im.write(ctx, j)
				case <-ctx.Done():
					return
				}
			}
		}(queues[i])
	}
	// The input is read on a goroutine of its own: a read from a pipe
	// that stalls does not stop an interrupt, which leaves it behind.
	seed := maphash.MakeSeed()
	read := make(chan error, 1)
	go func() {
		err := im.read(ctx, r, func(j job) bool {
			q := queues[maphash.String(seed, j.key)%uint64(len(queues))]
			select {
			case q <- j:
				return true
			case <-ctx.Done():
				return false
			}
		})
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

	im.mu.Lock()
	st, failure := im.st, im.failure
	im.mu.Unlock()
	if readErr != nil && failure == nil {
		failure = readErr
	}
	summary := fmt.Sprintf("Imported %s, %s bytes, into %s in %s; skipped %s%s, failed %s",
		plural(st.keys, "key"), thousands(st.bytes), im.a.nsLabel(im.ns.ID()), elapsed(im.now().Sub(start)),
		thousands(int64(st.expired+st.existed)), reasons(st.expired, "expired", st.existed, "already there"), thousands(int64(st.failed)))
	if im.ifAbsent {
		switch {
		case im.conditional.Load():
			summary += "; existing keys found with If-None-Match: *"
		case im.heads.Load() > 0:
			summary += "; existing keys found with a HEAD before each write (the server does not honour If-None-Match)"
		}
	}
	if failure == nil || st.keys+st.expired+st.existed+st.failed > 0 {
		im.a.hint("%s", summary)
	}
	return transferOutcome(ctx, failure, st.failed, "line")
}

// transferOutcome is how an import or a bulk command ends: interrupted,
// stopped by failure, with failed of its keys (or lines) refused, or
// done.
func transferOutcome(ctx context.Context, failure error, failed int, noun string) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case failure != nil:
		return failure
	case failed > 0:
		return &exitError{code: ExitError, err: fmt.Errorf("%s failed; see above", plural(failed, noun))}
	}
	return nil
}

// read parses the input line by line and hands each key line to send. It
// returns the error that stopped it: a bad header, a bad line (without
// --keep-going), a read error, or nil at the end of the input.
func (im *importer) read(ctx context.Context, r *bufio.Reader, send func(job) bool) error {
	n := 0
	header := false
	for {
		if ctx.Err() != nil || im.stopped() {
			return nil
		}
		line, err := readLine(r, header && im.keepGoing)
		if err == io.EOF {
			break
		}
		n++
		if errors.Is(err, errLineTooLong) {
			err = fmt.Errorf("line %d is over %d MiB; kv-export/1 lines are at most 4 MiB", n, maxExportLine>>20)
			if !header || !im.keepGoing {
				return err
			}
			im.fail(err)
			continue
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
			err = fmt.Errorf("line %d: %w", n, err)
			if !im.keepGoing {
				return err // the lines before it are written still
			}
			im.fail(err)
			continue
		}
		j.line = n
		if !send(j) {
			return nil
		}
	}
	if !header {
		return errors.New("the input is empty; expected a kv-export/1 file, as export writes it")
	}
	return nil
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line without its newline, holding at most
// maxExportLine bytes of it: a longer line is reported as errLineTooLong,
// at once, or with skip once the rest of it has been read and dropped. It
// returns io.EOF at the end of the input.
func readLine(r *bufio.Reader, skip bool) ([]byte, error) {
	var line []byte
	long := false
	for {
		chunk, err := r.ReadSlice('\n')
		if !long {
			if len(line)+len(chunk) > maxExportLine+1 { // +1: the newline
				if !skip {
					return nil, errLineTooLong
				}
				long, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF:
			if len(line) == 0 && !long {
				return nil, io.EOF
			}
		case err != nil:
			return nil, err
		}
		if long {
			return nil, errLineTooLong
		}
		return bytes.TrimSuffix(line, []byte("\n")), nil
	}
}

// checkHeader checks the first line.
func checkHeader(line []byte) error {
	var h exportHeader
	if err := json.Unmarshal(line, &h); err != nil {
		return fmt.Errorf("not a kv-export/1 header (%s); the first line must be like {\"format\":\"kv-export/1\",...}", jsonProblem(err))
	}
	if h.Format != exportFormat {
		return fmt.Errorf("the format is %.40q; this command reads %s", h.Format, exportFormat)
	}
	return nil
}

// parseRecord checks a key line and returns it as a job.
func parseRecord(line []byte) (job, error) {
	var rec exportRecord
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return job{}, fmt.Errorf("not a key line of kv-export/1 (%s)", jsonProblem(err))
	}
	if dec.More() {
		return job{}, errors.New("more than one JSON value on the line")
	}
	if err := kv.ValidateKey(rec.Key); err != nil {
		return job{}, fmt.Errorf("key %.80q: %s", rec.Key, message(err))
	}
	j := job{key: rec.Key, ctype: rec.ContentType}
	switch {
	case rec.Value != nil && rec.ValueBase64 != nil:
		return job{}, fmt.Errorf("key %s has both value and value_base64; give one", rec.Key)
	case rec.Value != nil:
		j.value = []byte(*rec.Value)
	case rec.ValueBase64 != nil:
		v, err := base64.StdEncoding.Strict().DecodeString(*rec.ValueBase64)
		if err != nil {
			return job{}, fmt.Errorf("key %s: value_base64 is not standard base64 (%v)", rec.Key, err)
		}
		j.value = v
	default:
		return job{}, fmt.Errorf("key %s has no value nor value_base64", rec.Key)
	}
	if len(j.value) > kv.MaxValueSize {
		return job{}, fmt.Errorf("key %s: the value is %d bytes; the limit is %d (1 MiB)", rec.Key, len(j.value), kv.MaxValueSize)
	}
	if len(j.ctype) > kv.MaxContentTypeLen {
		return job{}, fmt.Errorf("key %s: content_type is %d bytes; the limit is %d", rec.Key, len(j.ctype), kv.MaxContentTypeLen)
	}
	for i := 0; i < len(j.ctype); i++ {
		if c := j.ctype[i]; c < 0x20 || c > 0x7e {
			return job{}, fmt.Errorf("key %s: content_type must be printable ASCII", rec.Key)
		}
	}
	if rec.ExpiresAt != nil {
		t, err := time.Parse(time.RFC3339Nano, *rec.ExpiresAt)
		if err != nil {
			return job{}, fmt.Errorf("key %s: expires_at %.64q is not an RFC 3339 time or null", rec.Key, *rec.ExpiresAt)
		}
		j.expires = t
	}
	return j, nil
}

// jsonProblem says briefly what is wrong with a line's JSON.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d: %s", se.Offset, se.Error())
	case errors.As(err, &te):
		if te.Field != "" {
			return fmt.Sprintf("%s must be a string, not a JSON %s", te.Field, te.Value)
		}
		return fmt.Sprintf("expected a JSON object, got a JSON %s", te.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON value is incomplete"
	}
	return oneLine(err.Error())
}

// write writes one key, as the flags say, and counts the outcome.
func (im *importer) write(ctx context.Context, j job) {
	if ctx.Err() != nil || im.stopped() {
		return
	}
	opts := &client.PutOptions{ContentType: j.ctype}
	if !j.expires.IsZero() {
		ttl, ok := client.RemainingTTL(j.expires, im.now())
		if !ok {
			im.count(func(st *importStats) { st.expired++ })
			return
		}
		opts.TTL = ttl
	}
	var err error
	written := true
	if im.ifAbsent {
		written, err = im.putIfAbsent(ctx, j, opts)
	} else {
		_, err = im.ns.Put(ctx, j.key, j.value, opts)
	}
	switch {
	case err != nil && ctx.Err() != nil:
		// Interrupted: the write may or may not have landed; a resumed
		// import with --if-absent finds out.
	case err != nil:
		im.fail(&explained{msg: fmt.Sprintf("line %d: writing key %s: %s", j.line, j.key, message(err)), err: err})
	case !written:
		im.count(func(st *importStats) { st.existed++ })
	default:
		im.count(func(st *importStats) { st.keys++; st.bytes += int64(len(j.value)) })
	}
}

// putIfAbsent writes j unless its key exists. Until a server's answer has
// shown that it honours If-None-Match (by sending an ETag), the key is
// looked for with a HEAD first: a server without conditional writes would
// ignore the header and replace the key.
func (im *importer) putIfAbsent(ctx context.Context, j job, opts *client.PutOptions) (bool, error) {
	if !im.conditional.Load() {
		im.heads.Add(1)
		info, err := im.ns.Info(ctx, j.key)
		if err == nil {
			if info.ETag != "" {
				im.conditional.Store(true)
			}
			return false, nil
		}
		if !errors.Is(err, kv.ErrNotFound) {
			return false, err
		}
	}
	res, err := im.ns.PutIfAbsent(ctx, j.key, j.value, opts)
	if err != nil {
		return false, err
	}
	if res.ETag != "" {
		im.conditional.Store(true)
	}
	return res.Written, nil
}

func (im *importer) count(f func(*importStats)) {
	im.mu.Lock()
	f(&im.st)
	im.mu.Unlock()
}

// fail records a failed write, or with --keep-going a bad line. Without
// --keep-going the first failed write stops the import (fail returns
// false: keys not yet written are left); with it, the failure is reported
// on stderr and counted (true: go on).
func (im *importer) fail(err error) bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	if !im.keepGoing {
		if im.failure == nil {
			im.failure = err
		}
		return false
	}
	im.st.failed++
	im.reports++
	switch {
	case im.reports <= maxReports:
		im.a.hint("%s", oneLine(err.Error()))
	case im.reports == maxReports+1:
		im.a.hint("(further failures are counted, not listed)")
	}
	return true
}

// stopped reports that a failure has stopped the import.
func (im *importer) stopped() bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.failure != nil
}
