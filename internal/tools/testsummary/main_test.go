package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestSummaryOfARealRun feeds testsummary the JSON of a real go test run
// of a package made for it: one test passes, one skips, one fails.
func TestSummaryOfARealRun(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := exec.Command("sh", "-c", "cat > "+dir+"/"+name+" <<'EOF'\n"+text+"\nEOF").Run(); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/x\n\ngo 1.22")
	write("x_test.go", `package x

import "testing"

func TestPasses(t *testing.T) {}
func TestSkips(t *testing.T)  { t.Skip("no widget on PATH") }
func TestFails(t *testing.T)  { t.Log("the detail"); t.Fatal("broken") }`)
	cmd := exec.Command("go", "test", "-json", "./...")
	cmd.Dir = dir
	js, _ := cmd.Output() // the failing test makes go test exit 1
	var out bytes.Buffer
	code := run(bytes.NewReader(js), &out)
	got := out.String()
	if code != 1 {
		t.Errorf("exit %d with a failed test; want 1\n%s", code, got)
	}
	for _, want := range []string{
		"1 tests passed, 1 failed, 1 skipped",
		"skipped (1): no widget on PATH: example.com/x TestSkips",
		"broken", "the detail", "FAIL\texample.com/x",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the summary lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "TestPasses") {
		t.Errorf("the output of a passing test is shown:\n%s", got)
	}
	if code := run(strings.NewReader(""), &out); code != 1 {
		t.Errorf("nothing ran: exit %d; want 1", code)
	}
}

// TestSummaryOfATimeout: a package killed by its -timeout fails with no
// result for the test it was running; the summary shows that test's
// output, its log and the panic that says why.
func TestSummaryOfATimeout(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := exec.Command("sh", "-c", "cat > "+dir+"/"+name+" <<'EOF'\n"+text+"\nEOF").Run(); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/y\n\ngo 1.22")
	write("y_test.go", `package y

import (
	"testing"
	"time"
)

func TestPasses(t *testing.T) {}
func TestHangs(t *testing.T)  { t.Log("the last word"); time.Sleep(time.Minute) }`)
	cmd := exec.Command("go", "test", "-json", "-timeout", "1s", "./...")
	cmd.Dir = dir
	js, _ := cmd.Output()
	var out bytes.Buffer
	code := run(bytes.NewReader(js), &out)
	got := out.String()
	if code != 1 {
		t.Errorf("exit %d with a timed-out package; want 1\n%s", code, got)
	}
	for _, want := range []string{"NO RESULT: TestHangs", "the last word", "panic: test timed out", "FAIL\texample.com/y"} {
		if !strings.Contains(got, want) {
			t.Errorf("the summary lacks %q:\n%s", want, got)
		}
	}
}
