package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunScaleSmall runs the scale mode end to end with a few thousand
// keys against a kvd it builds, and checks that the figures are sane.
func TestRunScaleSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs kvd")
	}
	dir := t.TempDir()
	cfg := DefaultScaleConfig()
	cfg.KVD = goBuild(t, dir, "kvd")
	cfg.Keys, cfg.SmallKeys = 3000, 300
	cfg.FillClients, cfg.Clients = 8, 4
	cfg.Duration, cfg.Warmup = 300*time.Millisecond, 100*time.Millisecond
	cfg.Settle, cfg.Progress = 500*time.Millisecond, 100*time.Millisecond
	cfg.WorkDir = dir
	var log bytes.Buffer
	cfg.Log = &log
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := RunScale(ctx, cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}

	if rep.Load.Keys != int64(cfg.Keys) || rep.Load.KeysPerSec <= 0 || rep.Load.PeakRSS <= 0 {
		t.Errorf("load: %+v", rep.Load)
	}
	if rep.RawBytesPerKey != len(mainKey(0))+cfg.ValueSize {
		t.Errorf("raw bytes per key %d", rep.RawBytesPerKey)
	}
	for name, d := range map[string]ScaleDisk{"after load": rep.DiskLoaded, "after settle": rep.DiskSettled, "after stop": rep.DiskStopped, "final": rep.DiskFinal} {
		if d.Files == 0 || d.BytesPerKey <= float64(cfg.ValueSize) || d.SSTBytes+d.WALBytes > d.Bytes {
			t.Errorf("disk %s: %+v", name, d)
		}
	}
	if rep.StartEmpty.Seconds <= 0 || rep.StartLoaded.Seconds <= 0 || rep.StartLoaded.RSS <= 0 || rep.StartLoaded.Keys != cfg.Keys {
		t.Errorf("start-up: empty %+v, loaded %+v", rep.StartEmpty, rep.StartLoaded)
	}
	if rep.StopSeconds <= 0 {
		t.Errorf("stop %vs", rep.StopSeconds)
	}
	if rep.Usage == nil || rep.Usage.Writes != int64(cfg.Keys) || rep.Usage.StoredBytes != int64(cfg.Keys*rep.RawBytesPerKey) {
		t.Errorf("usage record %+v, want %d writes of %d bytes", rep.Usage, cfg.Keys, rep.RawBytesPerKey)
	}
	if rep.SmallFill.Keys != cfg.SmallKeys {
		t.Errorf("small fill %+v", rep.SmallFill)
	}
	for _, stage := range []string{StageLoaded, StageRestarted, StageSmall} {
		g, ok := rep.Get(stage)
		if !ok {
			t.Fatalf("no GET at stage %s", stage)
		}
		want := cfg.Keys
		if stage == StageSmall {
			want = cfg.SmallKeys
		}
		if g.Keys != want || g.Clients != cfg.Clients || g.Ops <= 0 || g.Errors != 0 || g.P99us <= 0 || g.P50us > g.P99us {
			t.Errorf("GET %s: %+v", stage, g)
		}
	}
	if rep.P99Ratio <= 0 || rep.ColdP99Ratio <= 0 || rep.PeakRSS <= 0 || len(rep.Targets) != 3 {
		t.Errorf("ratios %v %v, peak RSS %d, targets %+v", rep.P99Ratio, rep.ColdP99Ratio, rep.PeakRSS, rep.Targets)
	}
	if len(rep.Load.Samples) == 0 || !strings.Contains(log.String(), "kvd: load ") {
		t.Errorf("no progress lines:\n%s", log.String())
	}

	var out bytes.Buffer
	rep.Print(&out)
	for _, s := range []string{"load", "bytes/key", "start-up, 3000 keys", "restarted", "targets:"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("printed report lacks %q:\n%s", s, out.String())
		}
	}
	path := filepath.Join(dir, "scale.json")
	if err := rep.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back ScaleReport
	if err := json.Unmarshal(b, &back); err != nil || back.Load.Keys != rep.Load.Keys || len(back.Gets) != 3 || back.P99Ratio != rep.P99Ratio {
		t.Fatalf("JSON round trip: %v", err)
	}
}
