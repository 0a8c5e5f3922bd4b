package bench

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// The watch mode's reader of a watch stream: a lean Server-Sent Events
// parser that keeps of each event only what the watchers check, so that
// reading ten thousand streams costs the load generator little.

// sseKind is an event's type, as far as the watchers tell them apart.
type sseKind uint8

const (
	sseOther sseKind = iota // delete, expire, an unnamed event, anything else
	ssePut
	sseReady
	sseOverflow
)

// sseEvent is what the watchers read of one event.
type sseEvent struct {
	kind sseKind
	// rev is the event's id, the change's revision, when hasRev.
	rev    uint64
	hasRev bool
	// sent is the time the watch writer sent the PUT (monoNow), read
	// from the key in the event's data (see watchKeyPrefix), when
	// hasSent.
	sent    int64
	hasSent bool
}

// watchKeyPrefix starts the keys of the watch writer: "w/", the prefix's
// number and "/" (see WatchConfig.Prefixes), the time the PUT was sent
// (monoNow, in decimal), "-" and a sequence number. The key carries the
// send time, so that a watcher measures an event's delivery latency from
// the event alone, whichever kvd sent it and whether or not the writer
// has had its answer yet.
const watchKeyPrefix = "w/"

// watchPrefix is the prefix of the watch writer's keys under prefix g.
func watchPrefix(g int) string { return watchKeyPrefix + strconv.Itoa(g) + "/" }

// watchKey is the watch writer's key for its seq-th PUT, under prefix g,
// sent at sent.
func watchKey(g int, sent, seq int64) string {
	return watchPrefix(g) + strconv.FormatInt(sent, 10) + "-" + strconv.FormatInt(seq, 10)
}

// dataKeyPrefix is how the data of a watch event begins, up to its key.
var dataKeyPrefix = []byte(`{"key":"` + watchKeyPrefix)

// sseReader reads the events of a stream.
type sseReader struct {
	br *bufio.Reader
}

// next reads the next event into ev. Lines end with "\n" or "\r\n" (kvd
// never ends one with a lone "\r"); comment lines and blank lines before
// an event are skipped; a line longer than the reader's buffer is judged
// by the part the buffer holds. It returns io.ErrUnexpectedEOF when the
// stream ends inside an event.
func (r *sseReader) next(ev *sseEvent) error {
	*ev = sseEvent{}
	fields := 0
	for {
		line, err := r.br.ReadSlice('\n')
		long := errors.Is(err, bufio.ErrBufferFull)
		if err != nil && !long {
			if err == io.EOF && (fields > 0 || len(line) > 0) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if !long && len(line) == 0 {
			if fields > 0 {
				return nil
			}
			continue
		}
		if len(line) > 0 && line[0] != ':' {
			fields++
			ev.field(line)
		}
		for long {
			_, err = r.br.ReadSlice('\n')
			if long = errors.Is(err, bufio.ErrBufferFull); err != nil && !long {
				return err
			}
		}
	}
}

// field applies one "name: value" line to ev.
func (ev *sseEvent) field(line []byte) {
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		value = bytes.TrimPrefix(value, []byte(" "))
	}
	switch string(name) {
	case "id":
		ev.rev, ev.hasRev = parseDecimal(value)
	case "event":
		switch string(value) {
		case "put":
			ev.kind = ssePut
		case "ready":
			ev.kind = sseReady
		case "overflow":
			ev.kind = sseOverflow
		default:
			ev.kind = sseOther
		}
	case "data":
		if rest, ok := bytes.CutPrefix(value, dataKeyPrefix); ok && !ev.hasSent {
			if i := bytes.IndexByte(rest, '/'); i >= 0 {
				rest = rest[i+1:]
			}
			if i := bytes.IndexByte(rest, '-'); i > 0 {
				if n, ok := parseDecimal(rest[:i]); ok && n <= 1<<62 {
					ev.sent, ev.hasSent = int64(n), true
				}
			}
		}
	}
}

// parseDecimal parses b as a decimal integer of at most 19 digits.
func parseDecimal(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// stampConn is a connection that notes when it last read bytes
// (monoNow). An event's delivery latency taken from it when the event has
// been parsed runs to the read that brought the event's last bytes, or a
// later one: never less than the truth, and without the time kvbench
// takes to parse what it has read. It costs one clock reading per read
// rather than per event.
type stampConn struct {
	net.Conn
	at int64
}

func (c *stampConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.at = monoNow()
	}
	return n, err
}

// monoNow returns the system's monotonic clock in nanoseconds: the same
// clock in every process, which wall-clock steps do not move. The writer
// stamps its PUTs with it and the watchers process their arrival.
func monoNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("bench: CLOCK_MONOTONIC: " + err.Error())
	}
	return ts.Nano()
}
