package service

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"strings"

	"github.com/edgekv/kv"
)

// A cursor is base64url(version | check | last key). check is the first
// 8 bytes of SHA-256 over the namespace, the prefix and the last key, so a
// cursor altered by hand, truncated, or used with another namespace or
// prefix is refused with a 400 instead of silently walking elsewhere.
const (
	cursorVersion  = 1
	cursorCheckLen = 8
	// maxCursorLen bounds the encoded form: version, check and a longest key.
	maxCursorLen = (1 + cursorCheckLen + kv.MaxKeyLen + 2) * 4 / 3
)

func cursorCheck(ns kv.ID, prefix, last string) []byte {
	h := sha256.New()
	h.Write([]byte("kv-cursor\x00"))
	h.Write([]byte(ns.String()))
	h.Write([]byte{0})
	h.Write([]byte(prefix))
	h.Write([]byte{0})
	h.Write([]byte(last))
	return h.Sum(nil)[:cursorCheckLen]
}

// EncodeCursor returns the cursor that resumes a listing of namespace ns
// with prefix after key last.
func EncodeCursor(ns kv.ID, prefix, last string) string {
	b := make([]byte, 0, 1+cursorCheckLen+len(last))
	b = append(b, cursorVersion)
	b = append(b, cursorCheck(ns, prefix, last)...)
	b = append(b, last...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor returns the last key of a cursor made by EncodeCursor for the
// same namespace and prefix, or an EInvalid error.
func DecodeCursor(ns kv.ID, prefix, cursor string) (string, error) {
	bad := kv.Errorf(kv.EInvalid, "cursor is not valid for this listing; pass meta.cursor from the previous page unchanged, with the same prefix").WithParam("cursor")
	// Strict decoding still skips CR and LF; a cursor never has them.
	if len(cursor) > maxCursorLen || strings.ContainsAny(cursor, "\r\n") {
		return "", bad
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(cursor)
	if err != nil || len(b) < 1+cursorCheckLen+1 || b[0] != cursorVersion {
		return "", bad
	}
	last := string(b[1+cursorCheckLen:])
	if kv.ValidateKey(last) != nil || !strings.HasPrefix(last, prefix) {
		return "", bad
	}
	if !bytes.Equal(b[1:1+cursorCheckLen], cursorCheck(ns, prefix, last)) {
		return "", bad
	}
	return last, nil
}
