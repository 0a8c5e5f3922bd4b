package kv

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestValidateKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want string // "" for valid; else a part of the detail
	}{
		{"a", ""},
		{"user/123", ""},
		{"a//b", ""},
		{"./x", ""},
		{"a/../b", ""},
		{"trailing/", ""},
		{"-_/=.AZaz09", ""},
		{strings.Repeat("k", MaxKeyLen), ""},
		{"", "empty"},
		{strings.Repeat("k", MaxKeyLen+1), "257 characters"},
		{"_reserved", "reserved"},
		{"a:b", "':'"},
		{"a b", "' '"},
		{"a\x00b", "byte 0x00"},
		{"a\xffb", "byte 0xff"},
		{"é", "byte 0xc3"},
		{"a%2Fb", "'%'"},
	} {
		err := ValidateKey(tc.key)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("ValidateKey(%q) = %v, want valid", tc.key, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalid)):
			t.Errorf("ValidateKey(%q) = %v, want an EInvalid error mentioning %q", tc.key, err, tc.want)
		}
		if err != nil && err.(*Error).Parameter != "key" {
			t.Errorf("ValidateKey(%q): parameter %q, want key", tc.key, err.(*Error).Parameter)
		}
	}
}

// FuzzValidateKey checks ValidateKey against the contract's rule written
// out plainly.
func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"a", "_a", "a:b", "", "user/1", "\x00", strings.Repeat("x", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		valid := len(key) >= 1 && len(key) <= MaxKeyLen && key[0] != '_'
		for i := 0; i < len(key); i++ {
			c := key[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_/=.", c) >= 0) {
				valid = false
			}
		}
		if err := ValidateKey(key); (err == nil) != valid {
			t.Fatalf("ValidateKey(%q) = %v; the rule says valid=%v", key, err, valid)
		}
	})
}

func TestParseID(t *testing.T) {
	const canon = "550e8400-e29b-41d4-a716-446655440000"
	id, err := ParseID(canon)
	if err != nil || id.String() != canon {
		t.Fatalf("ParseID(%q) = %v, %v", canon, id, err)
	}
	if up, err := ParseID(strings.ToUpper(canon)); err != nil || up != id {
		t.Fatalf("upper case: %v, %v", up, err)
	}
	for _, bad := range []string{"", "550e8400e29b41d4a716446655440000", canon + "0", canon[:35], "550e8400-e29b-41d4-a716-44665544000g", "550e8400-e29b-41d4-a716_446655440000", "550e8400-e29b-41d4-a7166-44665544000", "{550e8400-e29b-41d4-a716-4466554400}", " " + canon[1:]} {
		if _, err := ParseID(bad); err == nil || !errors.Is(err, ErrInvalid) || err.(*Error).Parameter != "id" {
			t.Errorf("ParseID(%q) = %v, want an EInvalid error about id", bad, err)
		}
	}
	var back ID
	if err := back.UnmarshalText([]byte(canon)); err != nil || back != id {
		t.Fatalf("UnmarshalText: %v %v", back, err)
	}
	if b, _ := id.MarshalText(); string(b) != canon {
		t.Fatalf("MarshalText = %s", b)
	}
	if !(ID{}).IsZero() || id.IsZero() {
		t.Fatal("IsZero")
	}
	n := NewID()
	if n[6]>>4 != 4 || n[8]>>6 != 2 {
		t.Fatalf("NewID %s is not a version 4 UUID", n)
	}
}

// FuzzParseID: a string that parses prints back as itself in lower case,
// and every ID round-trips.
func FuzzParseID(f *testing.F) {
	f.Add("550e8400-e29b-41d4-a716-446655440000")
	f.Add("550E8400-E29B-41D4-A716-44665544000Z")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		if got := id.String(); got != strings.ToLower(s) {
			t.Fatalf("ParseID(%q).String() = %q", s, got)
		}
		if again, err := ParseID(id.String()); err != nil || again != id {
			t.Fatalf("round trip of %q: %v %v", s, again, err)
		}
	})
}

// Every code maps to a status; a status that only one code has maps back
// to it, and one that several share maps to its chosen code.
func TestCodeTable(t *testing.T) {
	byStatus := map[int][]ErrorCode{}
	for code, info := range codeInfo {
		byStatus[info.status] = append(byStatus[info.status], code)
		if !KnownCode(code) {
			t.Errorf("KnownCode(%s) = false", code)
		}
	}
	for status, codes := range byStatus {
		got := CodeForStatus(status)
		switch {
		case len(codes) == 1 && got != codes[0]:
			t.Errorf("CodeForStatus(%d) = %s, want %s", status, got, codes[0])
		case len(codes) > 1 && statusCodes[status] == "":
			t.Errorf("status %d has codes %v and no chosen one", status, codes)
		case len(codes) > 1 && got != statusCodes[status]:
			t.Errorf("CodeForStatus(%d) = %s, want %s", status, got, statusCodes[status])
		}
	}
	for code, info := range codeInfo {
		_ = info
		if code.Title() == "Error" || code.Title() == "" {
			t.Errorf("%s has no title", code)
		}
	}
	for _, tc := range []struct {
		status int
		want   ErrorCode
	}{
		{http.StatusTeapot, EInvalid},
		{http.StatusBadGateway, EInternal},
		{http.StatusGatewayTimeout, EInternal},
	} {
		if got := CodeForStatus(tc.status); got != tc.want {
			t.Errorf("CodeForStatus(%d) = %s, want %s", tc.status, got, tc.want)
		}
	}
	if KnownCode("99999") || ErrorCode("99999").HTTPStatus() != http.StatusInternalServerError {
		t.Error("an unknown code must map to 500")
	}
}

func TestErrorsIs(t *testing.T) {
	e := Errorf(ENotFound, "no such thing").WithParam("x")
	if !errors.Is(e, ErrNotFound) || errors.Is(e, ErrInvalid) {
		t.Fatal("errors.Is by code")
	}
	if !IsKeyNotFound(KeyNotFound()) || IsKeyNotFound(NamespaceNotFound()) {
		t.Fatal("IsKeyNotFound")
	}
	if !ShouldRetry(409, NotReady(StatusPending)) || ShouldRetry(409, Errorf(EConflict, "taken")) || !ShouldRetry(503, nil) || ShouldRetry(404, nil) {
		t.Fatal("ShouldRetry")
	}
}
