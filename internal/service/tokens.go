package service

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/ratelimit"
	"github.com/edgekv/kv/internal/store"
)

// Tokens: a secret is "kvd_" and 256 random bits in base64url; only its
// SHA-256 digest is stored. The service authenticates a request by the
// digest of its bearer token: static tokens (TELNYX_API_KEY) in constant
// time, stored ones through a cache that every kvd process keeps current
// from the store's revocations (RevokedSince, polled by WatchTokens), so a
// revoked token is refused by every process within a second and a valid
// one costs no storage read. Failed authentications are limited per client
// address, and unknown digests are remembered for a while, so a flood of
// wrong tokens does not reach the store.

// TokenPrefix starts every secret kvd makes.
const TokenPrefix = "kvd_"

// TokenSpec is what a new token may do.
type TokenSpec struct {
	Org         string
	Name        string
	Permissions []kv.Permission // nil: every permission
	Namespaces  []kv.ID         // nil: every namespace of Org
	Prefixes    []string        // nil: every key
	ExpiresIn   time.Duration   // 0: never
}

// validate checks spec and returns it normalised.
func (spec TokenSpec) validate() (TokenSpec, error) {
	bad := func(format string, args ...any) (TokenSpec, error) {
		return TokenSpec{}, kv.Errorf(kv.EInvalid, format, args...)
	}
	if err := kv.ValidateOrg(spec.Org); err != nil {
		return bad("%v", err)
	}
	if err := kv.ValidateTokenName(spec.Name); err != nil {
		return bad("%v", err)
	}
	if spec.Permissions == nil {
		spec.Permissions = kv.AllPermissions
	}
	spec.Permissions = kv.NormalizePermissions(spec.Permissions)
	if len(spec.Permissions) == 0 {
		return bad("a token needs at least one permission")
	}
	if len(spec.Namespaces) > kv.MaxTokenScopes || len(spec.Prefixes) > kv.MaxTokenScopes {
		return bad("a token's scope may list at most %d namespaces and %d prefixes", kv.MaxTokenScopes, kv.MaxTokenScopes)
	}
	if spec.Namespaces != nil {
		if len(spec.Namespaces) == 0 {
			return bad("a namespace scope needs at least one namespace")
		}
		slices.SortFunc(spec.Namespaces, func(a, b kv.ID) int { return slices.Compare(a[:], b[:]) })
		spec.Namespaces = slices.Compact(spec.Namespaces)
	}
	if spec.Prefixes != nil {
		if len(spec.Prefixes) == 0 {
			return bad("a prefix scope needs at least one prefix")
		}
		for _, p := range spec.Prefixes {
			if err := kv.ValidateScopePrefix(p); err != nil {
				return bad("%v", err)
			}
		}
		slices.Sort(spec.Prefixes)
		spec.Prefixes = slices.Compact(spec.Prefixes)
	}
	if spec.ExpiresIn < 0 {
		return bad("a token's expiry must be in the future")
	}
	return spec, nil
}

// CreateToken makes a token of spec in st at now and returns its secret
// (shown once, never stored) and its record. It is what `kvd token create`
// runs, in kvd or on a store opened directly.
func CreateToken(ctx context.Context, st store.Tokens, spec TokenSpec, now time.Time) (string, store.Token, error) {
	spec, err := spec.validate()
	if err != nil {
		return "", store.Token{}, err
	}
	var secret [32]byte
	var id [12]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return "", store.Token{}, err
	}
	if _, err := rand.Read(id[:]); err != nil {
		return "", store.Token{}, err
	}
	now = now.UTC().Truncate(time.Millisecond)
	t := store.Token{
		ID: "tok_" + hex.EncodeToString(id[:]), Name: spec.Name, Org: spec.Org,
		Permissions: spec.Permissions, Namespaces: spec.Namespaces, Prefixes: spec.Prefixes,
		CreatedAt: now,
	}
	if spec.ExpiresIn > 0 {
		t.ExpiresAt = now.Add(spec.ExpiresIn)
	}
	tok := TokenPrefix + base64.RawURLEncoding.EncodeToString(secret[:])
	if err := st.CreateToken(ctx, t, store.DigestToken(tok)); err != nil {
		return "", store.Token{}, fromStore(err, "")
	}
	return tok, t, nil
}

// ListTokens returns org's tokens ("": every organization's) as the token
// commands show them.
func ListTokens(ctx context.Context, st store.Tokens, org string, now time.Time) ([]kv.TokenRecord, error) {
	list, err := st.ListTokens(ctx, org)
	if err != nil {
		return nil, fromStore(err, "")
	}
	out := make([]kv.TokenRecord, len(list))
	for i, t := range list {
		out[i] = TokenRecord(t, now)
	}
	return out, nil
}

// RevokeToken revokes token id at now and returns it.
func RevokeToken(ctx context.Context, st store.Tokens, id string, now time.Time) (kv.TokenRecord, error) {
	t, err := st.RevokeToken(ctx, id, now.UTC().Truncate(time.Millisecond))
	if errors.Is(err, store.ErrTokenNotFound) {
		return kv.TokenRecord{}, kv.Errorf(kv.ENotFound, "no token has the id %q", truncate(id, 64))
	}
	if err != nil {
		return kv.TokenRecord{}, fromStore(err, "")
	}
	return TokenRecord(t, now), nil
}

// TokenRecord is t as the token commands show it, with its status at now.
func TokenRecord(t store.Token, now time.Time) kv.TokenRecord {
	r := kv.TokenRecord{ID: t.ID, Name: t.Name, Org: t.Org, Permissions: t.Permissions, Namespaces: t.Namespaces, Prefixes: t.Prefixes,
		CreatedAt: t.CreatedAt, Status: tokenStatus(t, now)}
	if r.Permissions == nil {
		r.Permissions = []kv.Permission{}
	}
	opt := func(at time.Time) *time.Time {
		if at.IsZero() {
			return nil
		}
		return &at
	}
	r.ExpiresAt, r.LastUsedAt, r.RevokedAt = opt(t.ExpiresAt), opt(t.LastUsedAt), opt(t.RevokedAt)
	return r
}

func tokenStatus(t store.Token, now time.Time) string {
	switch {
	case !t.RevokedAt.IsZero():
		return "revoked"
	case !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt):
		return "expired"
	}
	return "active"
}

// tokenCache is what the service knows of tokens: the valid ones it has
// seen, and the digests it found unknown, revoked or expired (for a
// while).
type tokenCache struct {
	mu      sync.RWMutex
	known   map[store.TokenDigest]*cachedToken
	refused map[store.TokenDigest]refusedToken
	mark    uint64 // RevokedSince's

	expiredLogged sync.Map // token id -> true, once its expiry is logged
}

type cachedToken struct {
	t         store.Token
	principal Principal
	// dropped is closed when the cache lets go of this entry (the token
	// was revoked, or the entry was evicted or replaced): what holds the
	// token (TokenHold) authenticates again.
	dropped chan struct{}
	// lastUsed is when the token was last used, in Unix nanoseconds;
	// stored is what the store was last told.
	lastUsed, stored atomic.Int64
}

type refusedToken struct {
	until time.Time
	err   *authError
}

const (
	// refusedFor is how long a digest found unknown (or a token found
	// revoked or expired) is refused from memory.
	refusedFor = 10 * time.Second
	// maxRefused bounds the refused digests remembered.
	maxRefused = 10000
	// maxKnown bounds the valid tokens cached; beyond, half are dropped
	// (and read again when used).
	maxKnown = 100000
)

func newTokenCache() *tokenCache {
	return &tokenCache{known: map[store.TokenDigest]*cachedToken{}, refused: map[store.TokenDigest]refusedToken{}}
}

func (c *tokenCache) refuse(d store.TokenDigest, e *authError, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.refused) >= maxRefused {
		clear(c.refused)
	}
	c.refused[d] = refusedToken{now.Add(refusedFor), e}
}

// remember caches ct under d, unless revocations were read since mark,
// the revocation mark when the token was looked up: the token may be
// among them, read before its lookup saw it revoked, and caching it would
// keep it valid here for good. Then ct is not cached (and its holds are
// dropped: they look it up again).
func (c *tokenCache) remember(d store.TokenDigest, ct *cachedToken, mark uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mark != mark {
		close(ct.dropped)
		return
	}
	if len(c.known) >= maxKnown {
		n := 0
		for k := range c.known {
			if n++; n > maxKnown/2 {
				break
			}
			c.drop(k)
		}
	}
	c.drop(d) // another request's lookup of the same token may have come first
	c.known[d] = ct
	delete(c.refused, d)
}

// drop lets go of d's entry, if any; the caller holds c.mu.
func (c *tokenCache) drop(d store.TokenDigest) {
	if ct, ok := c.known[d]; ok {
		close(ct.dropped)
		delete(c.known, d)
	}
}

// AuthConfig tunes authentication.
type AuthConfig struct {
	// FailureLimit is how many failed authentications a client address
	// may make per minute (and at once) before its requests with unknown
	// tokens are refused with 429 without a lookup; 0 turns the limit off.
	FailureLimit int
	// Log receives the audit lines: tokens created, revoked or found
	// expired, and refused authentications. nil: slog.Default().
	Log *slog.Logger
}

// DefaultAuthFailureLimit is AuthConfig.FailureLimit's default: far more
// than an honest client fails, far less than a guessing attack tries.
const DefaultAuthFailureLimit = 60

// Authenticate returns the principal of a bearer token sent from the
// client address addr (host:port, as http.Request.RemoteAddr), or an
// EUnauthorized error: missing, unknown, revoked or expired. A client
// address over its limit of failed authentications gets ERateLimited for
// a token kvd does not know, before any lookup.
func (s *Service) Authenticate(ctx context.Context, token, addr string) (Principal, error) {
	p, _, err := s.authenticate(ctx, token, addr)
	return p, err
}

// TokenHold is what a long-lived request, such as a watch stream, keeps
// of the token it was authenticated with, so that it need not
// authenticate again and again to stop within a second of a revocation or
// an expiry: Dropped is closed once this process lets go of what it knows
// of the token (it was revoked, here or in another process sharing the
// store, or left the cache), and Expires is when the token expires (zero:
// never). At either, the holder authenticates again.
type TokenHold struct {
	Dropped <-chan struct{} // nil: never (the TELNYX_API_KEY tokens)
	Expires time.Time
	ct      *cachedToken
}

// Stale reports whether the holder must authenticate again at now: the
// hold was dropped, or the token has expired.
func (h TokenHold) Stale(now time.Time) bool {
	select {
	case <-h.Dropped:
		return true
	default:
	}
	return !h.Expires.IsZero() && !now.Before(h.Expires)
}

// Touch records a use of the held token, for its last-use time.
func (h TokenHold) Touch(now time.Time) {
	if h.ct != nil {
		h.ct.lastUsed.Store(now.UnixNano())
	}
}

// HoldToken is Authenticate, for a request that goes on for long: with
// the principal, the token's hold.
func (s *Service) HoldToken(ctx context.Context, token, addr string) (Principal, TokenHold, error) {
	p, ct, err := s.authenticate(ctx, token, addr)
	if err != nil || ct == nil {
		return p, TokenHold{}, err
	}
	return p, TokenHold{Dropped: ct.dropped, Expires: ct.t.ExpiresAt, ct: ct}, nil
}

// authenticate is Authenticate, with the cache entry of the token (nil
// for a TELNYX_API_KEY token).
func (s *Service) authenticate(ctx context.Context, token, addr string) (Principal, *cachedToken, error) {
	if token == "" {
		s.refused(addr, "missing", "")
		return Principal{}, nil, kv.Errorf(kv.EUnauthorized, "missing API key; send the header Authorization: Bearer <API key>")
	}
	d := store.DigestToken(token)
	for _, st := range s.statics {
		if subtle.ConstantTimeCompare(d[:], st.digest[:]) == 1 {
			return FullPrincipal(st.org), nil, nil
		}
	}
	now := s.now()
	c := s.tokens
	c.mu.RLock()
	ct, known := c.known[d]
	r, refused := c.refused[d]
	mark := c.mark
	c.mu.RUnlock()
	if known {
		if _, err := s.usable(ct.t, now); err != nil {
			s.refused(addr, err.reason, ct.t.ID)
			return Principal{}, nil, err.kv
		}
		ct.lastUsed.Store(now.UnixNano())
		return ct.principal, ct, nil
	}
	if refused && now.Before(r.until) {
		s.refusedLimited(addr, r.err.reason)
		return Principal{}, nil, r.err.kv
	}

	key := addrKey(addr)
	if dec := s.authFailures.Check(key); !dec.Allowed {
		s.limitedAuth(addr)
		retry := max(1, int((dec.RetryAfter+time.Second-1)/time.Second))
		return Principal{}, nil, &RateLimitError{kv.Errorf(kv.ERateLimited, "too many failed authentications from this address; retry in %d s", retry), retry}
	}
	t, err := s.store.TokenByDigest(ctx, d)
	switch {
	case errors.Is(err, store.ErrTokenNotFound):
		e := &authError{errInvalidKey, "unknown"}
		c.refuse(d, e, now)
		s.authFailures.Spend(key)
		s.refused(addr, e.reason, "")
		return Principal{}, nil, e.kv
	case err != nil:
		return Principal{}, nil, fromStore(err, "")
	}
	if _, e := s.usable(t, now); e != nil {
		c.refuse(d, e, now)
		s.authFailures.Spend(key)
		s.refused(addr, e.reason, t.ID)
		return Principal{}, nil, e.kv
	}
	ct = &cachedToken{t: t, principal: principalOf(t), dropped: make(chan struct{})}
	ct.lastUsed.Store(now.UnixNano())
	ct.stored.Store(t.LastUsedAt.UnixNano())
	c.remember(d, ct, mark)
	return ct.principal, ct, nil
}

var errInvalidKey = kv.Errorf(kv.EUnauthorized, "invalid API key")

// RateLimitError is a 429 that says how many seconds to wait, for
// Retry-After.
type RateLimitError struct {
	Err   *kv.Error
	Retry int
}

func (e *RateLimitError) Error() string { return e.Err.Error() }
func (e *RateLimitError) Unwrap() error { return e.Err }

// authError is a refused token: what the client reads, and the reason the
// audit log gives.
type authError struct {
	kv     *kv.Error
	reason string
}

// usable checks a token found: not revoked, not expired. An expiry is
// logged once per token.
func (s *Service) usable(t store.Token, now time.Time) (Principal, *authError) {
	switch tokenStatus(t, now) {
	case "revoked":
		return Principal{}, &authError{kv.Errorf(kv.EUnauthorized, "this API key was revoked"), "revoked"}
	case "expired":
		s.tokens.noteExpired(s, t)
		return Principal{}, &authError{kv.Errorf(kv.EUnauthorized, "this API key has expired"), "expired"}
	}
	return principalOf(t), nil
}

func (c *tokenCache) noteExpired(s *Service, t store.Token) {
	if _, logged := c.expiredLogged.LoadOrStore(t.ID, true); !logged {
		s.authLog.Info("token expired", "token_id", t.ID, "org", t.Org, "expired_at", t.ExpiresAt)
	}
}

// refused logs a refused authentication.
func (s *Service) refused(addr, reason, tokenID string) {
	attrs := []any{"addr", addr, "reason", reason}
	if tokenID != "" {
		attrs = append(attrs, "token_id", tokenID)
	}
	s.authLog.Warn("authentication refused", attrs...)
}

// refusedLimited logs a refusal answered from memory (an unknown digest
// seen moments ago): at most one line per address per limitedLogEvery, so
// that a flood cannot fill the log.
func (s *Service) refusedLimited(addr, reason string) {
	if s.logOncePer(addr, "refused") {
		s.authLog.Warn("authentication refused", "addr", addr, "reason", reason, "note", "repeated refusals from this address are logged once a minute")
	}
}

// limitedAuth logs that addr is over its limit of failed authentications,
// once per address per limitedLogEvery.
func (s *Service) limitedAuth(addr string) {
	if s.logOncePer(addr, "limited") {
		s.authLog.Warn("authentication refused", "addr", addr, "reason", "too many failures from this address", "note", "logged once a minute while it lasts")
	}
}

const limitedLogEvery = time.Minute

func (s *Service) logOncePer(addr, what string) bool {
	k := what + " " + addrKey(addr)
	now := s.now()
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if last, ok := s.logged[k]; ok && now.Sub(last) < limitedLogEvery {
		return false
	}
	if len(s.logged) > maxRefused {
		clear(s.logged)
	}
	s.logged[k] = now
	return true
}

// addrKey is what failed authentications are counted by: the client's IP
// address, an IPv6 one by its /64 (what one host is given).
func addrKey(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if ip4 := ip.To4(); ip4 != nil {
		return ip4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// newAuthFailures is the limiter of failed authentications by address.
func newAuthFailures(limit int, now func() time.Time) *ratelimit.Limiter {
	return ratelimit.New(ratelimit.Config{Limit: limit, Burst: limit, Window: time.Minute, Now: now, MaxKeys: 100000})
}

// WatchTokens keeps the token cache current until ctx ends: every
// interval it drops the tokens revoked since the last look (in any process
// sharing the store), and now and then it stores when tokens were last
// used. kvd runs it for as long as it serves.
func (s *Service) WatchTokens(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	lastTouch := s.now()
	for {
		s.PollRevocations(ctx)
		if now := s.now(); now.Sub(lastTouch) >= touchEvery {
			s.flushUsed(ctx)
			lastTouch = now
		}
		select {
		case <-ctx.Done():
			s.flushUsed(context.WithoutCancel(ctx))
			return
		case <-t.C:
		}
	}
}

// touchEvery is how often the last use of tokens is stored.
const touchEvery = 30 * time.Second

// PollRevocations drops from the cache the tokens revoked since the last
// poll.
func (s *Service) PollRevocations(ctx context.Context) {
	c := s.tokens
	c.mu.Lock()
	mark := c.mark
	c.mu.Unlock()
	digests, next, err := s.store.RevokedSince(ctx, mark)
	if err != nil {
		if ctx.Err() == nil {
			s.authLog.Warn("tokens: read revocations", "err", err)
		}
		return
	}
	c.mu.Lock()
	for _, d := range digests {
		c.drop(d)
	}
	c.mark = max(c.mark, next)
	c.mu.Unlock()
}

// flushUsed stores when the cached tokens were last used, for those used
// since the store was last told.
func (s *Service) flushUsed(ctx context.Context) {
	c := s.tokens
	used := map[string]time.Time{}
	var told []func()
	c.mu.RLock()
	for _, ct := range c.known {
		if at := ct.lastUsed.Load(); at > ct.stored.Load() {
			used[ct.t.ID] = time.Unix(0, at).UTC()
			told = append(told, func() { ct.stored.Store(at) })
		}
	}
	c.mu.RUnlock()
	if len(used) == 0 {
		return
	}
	if err := s.store.TouchTokens(ctx, used); err != nil {
		s.authLog.Warn("tokens: record last use", "err", err)
		return
	}
	for _, f := range told {
		f()
	}
}

// CreateToken makes a token (see the package function) and logs it.
func (s *Service) CreateToken(ctx context.Context, spec TokenSpec) (string, kv.TokenRecord, error) {
	secret, t, err := CreateToken(ctx, s.store, spec, s.now())
	if err != nil {
		return "", kv.TokenRecord{}, err
	}
	s.authLog.Info("token created", tokenAttrs(t)...)
	return secret, TokenRecord(t, s.now()), nil
}

// ListTokens lists tokens (see the package function).
func (s *Service) ListTokens(ctx context.Context, org string) ([]kv.TokenRecord, error) {
	return ListTokens(ctx, s.store, org, s.now())
}

// RevokeToken revokes token id, refuses it at once in this process, and
// logs it.
func (s *Service) RevokeToken(ctx context.Context, id string) (kv.TokenRecord, error) {
	r, err := RevokeToken(ctx, s.store, id, s.now())
	if err != nil {
		return kv.TokenRecord{}, err
	}
	s.PollRevocations(ctx)
	s.authLog.Info("token revoked", "token_id", r.ID, "org", r.Org, "name", r.Name, "revoked_at", r.RevokedAt)
	return r, nil
}

func tokenAttrs(t store.Token) []any {
	attrs := []any{"token_id", t.ID, "org", t.Org, "name", t.Name, "permissions", fmt.Sprint(t.Permissions)}
	if t.Namespaces != nil {
		attrs = append(attrs, "namespaces", fmt.Sprint(t.Namespaces))
	}
	if t.Prefixes != nil {
		attrs = append(attrs, "prefixes", strconv.Quote(fmt.Sprint(t.Prefixes)))
	}
	if !t.ExpiresAt.IsZero() {
		attrs = append(attrs, "expires_at", t.ExpiresAt)
	}
	return attrs
}
