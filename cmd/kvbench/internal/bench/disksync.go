package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// DiskSync is the rate of small synced writes the disk under the work
// directory sustains from one writer: the ceiling of durable writes to one
// client, each of which must wait for its own sync.
type DiskSync struct {
	Seconds float64 `json:"seconds"` // measured time of each mode
	// AppendsPerSec: 1 KiB appended to a growing file, then fdatasync (a
	// new write-ahead log; the sync also commits the file's new size).
	AppendsPerSec float64 `json:"appends_per_sec"`
	// OverwritesPerSec: 1 KiB written into a file whose blocks are already
	// allocated and written, then fdatasync (a recycled write-ahead log).
	OverwritesPerSec float64 `json:"overwrites_per_sec"`
	// KVDPutNew1 is kvd's put-new at 1 client, in ops/s, and
	// KVDOfAppends its share of AppendsPerSec.
	KVDPutNew1   float64 `json:"kvd_put_new_1_client,omitempty"`
	KVDOfAppends float64 `json:"kvd_of_appends,omitempty"`
}

// measureDiskSync measures the disk's synced-write rates in dir, for d in
// each mode.
func measureDiskSync(dir string, d time.Duration) (DiskSync, error) {
	ds := DiskSync{Seconds: d.Seconds()}
	buf := make([]byte, 1<<10)
	for i := range buf {
		buf[i] = byte(i)
	}
	rate := func(name string, prealloc int64, write func(f *os.File, i int64) error) (float64, error) {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			return 0, err
		}
		defer os.Remove(path)
		defer f.Close()
		if prealloc > 0 {
			if _, err := f.Write(make([]byte, prealloc)); err != nil {
				return 0, err
			}
			if err := f.Sync(); err != nil {
				return 0, err
			}
		}
		n, start := int64(0), time.Now()
		for ; time.Since(start) < d; n++ {
			if err := write(f, n); err != nil {
				return 0, err
			}
			if err := fdatasync(f); err != nil {
				return 0, err
			}
		}
		return float64(n) / time.Since(start).Seconds(), nil
	}
	var err error
	if ds.AppendsPerSec, err = rate("disksync-append", 0, func(f *os.File, _ int64) error {
		_, err := f.Write(buf)
		return err
	}); err != nil {
		return ds, fmt.Errorf("disk sync, appends: %w", err)
	}
	const area = 64 << 20
	if ds.OverwritesPerSec, err = rate("disksync-overwrite", area, func(f *os.File, i int64) error {
		_, err := f.WriteAt(buf, i*int64(len(buf))%area)
		return err
	}); err != nil {
		return ds, fmt.Errorf("disk sync, overwrites: %w", err)
	}
	return ds, nil
}

func (ds *DiskSync) line() string {
	s := fmt.Sprintf("disk: 1 KiB + fdatasync, one writer: %.0f/s appending, %.0f/s overwriting allocated blocks (%.0fs each)", ds.AppendsPerSec, ds.OverwritesPerSec, ds.Seconds)
	if ds.KVDPutNew1 > 0 {
		s += fmt.Sprintf("; kvd put-new at 1 client: %.0f/s = %.2fx of the appends", ds.KVDPutNew1, ds.KVDOfAppends)
	}
	return s
}
