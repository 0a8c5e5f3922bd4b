// Command testsummary reads `go test -json` on standard input, prints what
// go test would print (each package's ok/FAIL line, and the whole output
// of every test that failed), then a one-line summary of what ran and
// what was skipped, with the skip reasons grouped. It exits 1 when
// anything failed or nothing ran, so `make test` keeps go test's verdict.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

// reasonLine is a t.Skip message as go test prints it.
var reasonLine = regexp.MustCompile(`^\s+\S+\.go:\d+: (.*)$`)

func main() {
	os.Exit(run(os.Stdin, os.Stdout))
}

func run(in io.Reader, out io.Writer) int {
	var (
		pkgOK, pkgFail, pkgNoTests int
		passed, failed, skipped    int
		reasons                    = map[string][]string{} // reason -> tests
		output                     = map[string][]string{} // package/test -> its lines
		slow                       []event
		bad                        bool
	)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Fprintln(out, sc.Text()) // not JSON: a build error, go vet's output
			continue
		}
		id := e.Package + "/" + e.Test
		switch e.Action {
		case "output":
			if e.Test == "" && (strings.HasPrefix(e.Output, "ok ") || strings.HasPrefix(e.Output, "FAIL") || strings.HasPrefix(e.Output, "?")) {
				fmt.Fprint(out, e.Output)
			} else {
				output[id] = append(output[id], e.Output)
			}
		case "build-output":
			fmt.Fprint(out, e.Output)
		case "build-fail":
			bad = true
		case "pass":
			if e.Test == "" {
				pkgOK++
				slow = append(slow, e)
			} else if !strings.Contains(e.Test, "/") {
				passed++
			}
			delete(output, id)
		case "skip":
			if e.Test == "" {
				pkgNoTests++
			} else if !strings.Contains(e.Test, "/") {
				skipped++
				reason := "no reason given"
				for _, l := range output[id] {
					if m := reasonLine.FindStringSubmatch(strings.TrimRight(l, "\n")); m != nil {
						reason = m[1]
					}
				}
				reasons[reason] = append(reasons[reason], strings.TrimPrefix(e.Package, "github.com/edgekv/kv/")+" "+e.Test)
			}
			delete(output, id)
		case "fail":
			bad = true
			if e.Test == "" {
				pkgFail++
				for _, l := range output[id] {
					fmt.Fprint(out, l)
				}
				printUnfinished(out, e.Package, output)
			} else {
				if !strings.Contains(e.Test, "/") {
					failed++
				}
				for _, l := range output[id] {
					fmt.Fprint(out, l)
				}
			}
			delete(output, id)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(out, "testsummary:", err)
		bad = true
	}
	sort.Slice(slow, func(i, j int) bool { return slow[i].Elapsed > slow[j].Elapsed })
	if len(slow) > 5 {
		slow = slow[:5]
	}
	var names []string
	for _, e := range slow {
		names = append(names, fmt.Sprintf("%s %.0fs", strings.TrimPrefix(e.Package, "github.com/edgekv/kv/"), e.Elapsed))
	}
	fmt.Fprintf(out, "\nsummary: %d packages ok, %d failed, %d without tests; %d tests passed, %d failed, %d skipped\n",
		pkgOK, pkgFail, pkgNoTests, passed, failed, skipped)
	if len(names) > 0 {
		fmt.Fprintf(out, "slowest packages: %s\n", strings.Join(names, ", "))
	}
	keys := make([]string, 0, len(reasons))
	for r := range reasons {
		keys = append(keys, r)
	}
	sort.Strings(keys)
	for _, r := range keys {
		fmt.Fprintf(out, "skipped (%d): %s: %s\n", len(reasons[r]), r, strings.Join(reasons[r], ", "))
	}
	if bad || pkgOK+pkgFail == 0 {
		return 1
	}
	return 0
}

// printUnfinished prints the output of the tests of pkg that never ended:
// a package killed by its -timeout (or a crash) fails with no result for
// the test it was running, and the reason is in that test's output. A
// goroutine dump can be long, so of each such test it prints at most the
// 200 lines before the first panic line and the 60 from it.
func printUnfinished(out io.Writer, pkg string, output map[string][]string) {
	var ids []string
	for id := range output {
		if strings.HasPrefix(id, pkg+"/") && id != pkg+"/" {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		lines := output[id]
		end := len(lines)
		for i, l := range lines {
			if strings.HasPrefix(l, "panic: ") {
				end = i
				break
			}
		}
		fmt.Fprintf(out, "--- NO RESULT: %s (it was running when the package failed)\n", strings.TrimPrefix(id, pkg+"/"))
		for _, l := range lines[max(0, end-200):min(len(lines), end+60)] {
			fmt.Fprint(out, l)
		}
		delete(output, id)
	}
}
