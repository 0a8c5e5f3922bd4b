// Package service is the key-value service between the HTTP API and the
// storage engine: it authenticates tokens, validates every input before
// storage sees it, applies the clock, and pages listings with cursors.
package service

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/metering"
	"github.com/edgekv/kv/internal/ratelimit"
	"github.com/edgekv/kv/internal/store"
)

// Config configures a Service.
type Config struct {
	Store store.Store
	// Now is the clock; nil means time.Now. Tests inject their own.
	Now func() time.Time
	// Wake is called after a namespace is created or marked deleting, so the
	// lifecycle worker starts on it at once; nil does nothing.
	Wake func()
	// StaticTokens are tokens accepted besides the store's, by organization
	// (kvd maps TELNYX_API_KEY to the default organization). Only their
	// digests are kept.
	StaticTokens map[string]string
	// Meter buffers the counts of reads, lists and deletes of missing keys;
	// nil counts them straight into the store.
	Meter *metering.Buffer
	// MaxNamespaces is how many namespaces an organization may have (in any
	// status); 0 means no limit.
	MaxNamespaces int
	// MaxStoredBytes is how many bytes (keys plus values) an organization
	// may store; 0 means no limit. A write that would take it over is
	// refused; see storageQuota for how closely it is held.
	MaxStoredBytes int64
	// Space, when set, refuses key writes and namespace creations while
	// the store's disk is nearly full; reads and deletes are never refused,
	// so that space can be freed. nil means no check (PostgreSQL).
	Space Space
	// Auth tunes authentication.
	Auth AuthConfig
}

// Space is a check of the store's free space.
type Space interface {
	// Err returns nil while writes may proceed, or the error (code
	// kv.EInsufficientStorage) to refuse them with. It is called on every
	// write, so it must be cheap, and safe for concurrent use.
	Err() error
}

// Service implements the key-value API on a Store. It is safe for
// concurrent use.
type Service struct {
	store   store.Store
	now     func() time.Time
	wake    func()
	statics []staticToken
	maxNS   int
	meter   *metering.Buffer
	storage *storageQuota // nil: no limit
	space   Space         // nil: no check

	tokens       *tokenCache
	authFailures *ratelimit.Limiter // nil: no limit
	authLog      *slog.Logger
	logMu        sync.Mutex
	logged       map[string]time.Time // see logOncePer

	watches *watchHub
}

type staticToken struct {
	digest store.TokenDigest
	org    string
}

// New returns a Service.
func New(cfg Config) *Service {
	s := &Service{store: cfg.Store, now: cfg.Now, wake: cfg.Wake, maxNS: cfg.MaxNamespaces, meter: cfg.Meter, space: cfg.Space}
	if s.meter == nil {
		s.meter = metering.NewBuffer(cfg.Store, 0, nil)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if cfg.MaxStoredBytes > 0 {
		s.storage = newStorageQuota(cfg.Store, cfg.MaxStoredBytes, s.now)
	}
	if s.wake == nil {
		s.wake = func() {}
	}
	for tok, org := range cfg.StaticTokens {
		s.statics = append(s.statics, staticToken{store.DigestToken(tok), org})
	}
	s.tokens = newTokenCache()
	s.authFailures = newAuthFailures(cfg.Auth.FailureLimit, s.now)
	s.authLog = cfg.Auth.Log
	if s.authLog == nil {
		s.authLog = slog.Default()
	}
	s.logged = map[string]time.Time{}
	s.watches = newWatchHub()
	return s
}

// Now returns the service's clock reading, in UTC.
func (s *Service) Now() time.Time { return s.now().UTC() }

// CreateNamespace creates a pending namespace called name for p's
// organization. A token scoped to namespaces cannot create one.
func (s *Service) CreateNamespace(ctx context.Context, p Principal, name string) (kv.Namespace, error) {
	if err := p.can(kv.PermNamespacesWrite); err != nil {
		return kv.Namespace{}, err
	}
	if p.Scoped() {
		return kv.Namespace{}, kv.Errorf(kv.EForbidden, "this API key is scoped to namespaces of its own and cannot create namespaces")
	}
	org := p.Org
	if err := kv.ValidateNamespaceName(name); err != nil {
		return kv.Namespace{}, err
	}
	if err := s.spaceErr(); err != nil {
		return kv.Namespace{}, err
	}
	if s.maxNS > 0 {
		// Checked before the creation, not with it: concurrent creations
		// may overshoot the limit by as many as run at once.
		_, total, err := s.store.ListNamespaces(ctx, org, 0, 1)
		if err != nil {
			return kv.Namespace{}, fromStore(err, name)
		}
		if total >= s.maxNS {
			return kv.Namespace{}, kv.Errorf(kv.EQuota, "this organization has %d namespaces, its limit; delete one to create another", total)
		}
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	ns := kv.Namespace{ID: kv.NewID(), Org: org, Name: name, Status: kv.StatusPending, CreatedAt: now, UpdatedAt: now}
	if err := s.store.CreateNamespace(ctx, ns); err != nil {
		return kv.Namespace{}, fromStore(err, name)
	}
	s.wake()
	return ns, nil
}

// spaceErr is Config.Space's verdict.
func (s *Service) spaceErr() error {
	if s.space == nil {
		return nil
	}
	return s.space.Err()
}

// NamespacePage is one page of a namespace listing.
type NamespacePage struct {
	Namespaces   []kv.Namespace
	PageNumber   int
	PageSize     int
	TotalPages   int
	TotalResults int
}

// ListNamespaces returns page number (from 1) of org's namespaces, size per
// page; sizes over kv.MaxPageSize are clamped.
func (s *Service) ListNamespaces(ctx context.Context, p Principal, number, size int) (NamespacePage, error) {
	if err := p.can(kv.PermNamespacesRead); err != nil {
		return NamespacePage{}, err
	}
	if number < 1 {
		return NamespacePage{}, kv.Errorf(kv.EInvalid, "page[number] must be an integer of at least 1").WithParam("page[number]")
	}
	if size < 1 {
		return NamespacePage{}, kv.Errorf(kv.EInvalid, "page[size] must be an integer from 1 to %d", kv.MaxPageSize).WithParam("page[size]")
	}
	size = min(size, kv.MaxPageSize)
	offset := (number - 1) * size
	if number > (1<<31)/size { // an offset no organization can reach
		offset = 1 << 31
	}
	if p.Scoped() {
		return s.listScopedNamespaces(ctx, p, number, size, offset)
	}
	list, total, err := s.store.ListNamespaces(ctx, p.Org, offset, size)
	if err != nil {
		return NamespacePage{}, fromStore(err, "")
	}
	return NamespacePage{Namespaces: list, PageNumber: number, PageSize: size, TotalPages: (total + size - 1) / size, TotalResults: total}, nil
}

// listScopedNamespaces is ListNamespaces for a token scoped to namespaces:
// its namespaces that exist, in the listing's order, paged in memory (a
// scope holds at most kv.MaxTokenScopes).
func (s *Service) listScopedNamespaces(ctx context.Context, p Principal, number, size, offset int) (NamespacePage, error) {
	var all []kv.Namespace
	for _, id := range p.namespaces {
		ns, err := s.store.GetNamespace(ctx, p.Org, id)
		if errors.Is(err, store.ErrNamespaceNotFound) {
			continue
		}
		if err != nil {
			return NamespacePage{}, fromStore(err, "")
		}
		all = append(all, ns)
	}
	slices.SortFunc(all, func(a, b kv.Namespace) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), bytes.Compare(a.ID[:], b.ID[:]))
	})
	page := []kv.Namespace{}
	if offset < len(all) {
		page = all[offset:min(len(all), offset+size)]
	}
	return NamespacePage{Namespaces: page, PageNumber: number, PageSize: size, TotalPages: (len(all) + size - 1) / size, TotalResults: len(all)}, nil
}

// GetNamespace returns namespace id.
func (s *Service) GetNamespace(ctx context.Context, p Principal, id kv.ID) (kv.Namespace, error) {
	if err := p.namespace(id, kv.PermNamespacesRead); err != nil {
		return kv.Namespace{}, err
	}
	ns, err := s.store.GetNamespace(ctx, p.Org, id)
	return ns, fromStore(err, "")
}

// DeleteNamespace marks org's namespace id deleting; the lifecycle worker
// then removes it and all its keys.
func (s *Service) DeleteNamespace(ctx context.Context, p Principal, id kv.ID) (kv.Namespace, error) {
	if err := p.namespace(id, kv.PermNamespacesWrite); err != nil {
		return kv.Namespace{}, err
	}
	ns, err := s.store.MarkDeleting(ctx, p.Org, id, s.now().UTC().Truncate(time.Millisecond))
	if err != nil {
		return kv.Namespace{}, fromStore(err, "")
	}
	s.wake()
	return ns, nil
}

// GetKey returns the value of key; the caller must Close it.
func (s *Service) GetKey(ctx context.Context, p Principal, id kv.ID, key string) (*store.Value, error) {
	if err := kv.ValidateKey(key); err != nil {
		return nil, err
	}
	if err := p.key(id, key, kv.PermKeysRead); err != nil {
		return nil, err
	}
	org := p.Org
	now := s.now()
	v, err := s.store.GetKey(ctx, org, id, key, now)
	if err == nil || errors.Is(err, store.ErrKeyNotFound) { // a read that finds nothing is billed too
		s.meter.Add(org, id, now, store.UsageCounts{Reads: 1})
	}
	return v, fromStore(err, "")
}

// RereadKey is GetKey without counting a read: for a request that has read
// the key once already and must read it again before answering.
func (s *Service) RereadKey(ctx context.Context, p Principal, id kv.ID, key string) (*store.Value, error) {
	if err := kv.ValidateKey(key); err != nil {
		return nil, err
	}
	if err := p.key(id, key, kv.PermKeysRead); err != nil {
		return nil, err
	}
	v, err := s.store.GetKey(ctx, p.Org, id, key, s.now())
	return v, fromStore(err, "")
}

// Put is a write of one value.
type Put struct {
	Data        []byte
	ContentType string        // "" means kv.DefaultContentType
	TTL         time.Duration // 0: the key never expires
	If          store.Condition
}

// ValidateTTL checks a ttl_secs value: a whole number of seconds from 1 to
// kv.MaxTTLSeconds.
func ValidateTTL(secs int64) (time.Duration, error) {
	if secs < 1 || secs > kv.MaxTTLSeconds {
		return 0, errTTL
	}
	return time.Duration(secs) * time.Second, nil
}

var errTTL = kv.Errorf(kv.EUnprocessable, "ttl_secs must be a whole number of seconds from 1 to %d", kv.MaxTTLSeconds).WithParam("ttl_secs")

// PutKey stores p under key and reports whether the key was created, and
// its new revision. A condition that does not hold is an EPrecondition
// error carrying the key's current ETag; it counts one read.
func (s *Service) PutKey(ctx context.Context, who Principal, id kv.ID, key string, p Put) (store.Written, error) {
	if err := kv.ValidateKey(key); err != nil {
		return store.Written{}, err
	}
	if err := who.key(id, key, kv.PermKeysWrite); err != nil {
		return store.Written{}, err
	}
	ct, err := validatePut(&p)
	if err != nil {
		return store.Written{}, err
	}
	if err := s.spaceErr(); err != nil {
		return store.Written{}, err
	}
	org := who.Org
	if s.storage != nil {
		n := int64(len(key) + len(p.Data))
		o, err := s.storage.reserve(ctx, org, n)
		if err != nil {
			return store.Written{}, err
		}
		w, err := s.putKey(ctx, org, id, key, ct, p)
		o.finish(n, err == nil)
		return w, err
	}
	return s.putKey(ctx, org, id, key, ct, p)
}

// validatePut checks a value, its content type and TTL, and returns the
// content type to store.
func validatePut(p *Put) (string, error) {
	if len(p.Data) > kv.MaxValueSize {
		return "", kv.Errorf(kv.ETooLarge, "value is %d bytes; the limit is %d bytes (1 MiB)", len(p.Data), kv.MaxValueSize)
	}
	ct := p.ContentType
	if ct == "" {
		ct = kv.DefaultContentType
	}
	if err := ValidateContentType(ct); err != nil {
		return "", err
	}
	if p.TTL != 0 && (p.TTL%time.Second != 0 || p.TTL < time.Second || p.TTL > kv.MaxTTLSeconds*time.Second) {
		return "", errTTL
	}
	return ct, nil
}

func (s *Service) putKey(ctx context.Context, org string, id kv.ID, key, ct string, p Put) (store.Written, error) {
	now := s.now()
	v := store.PutValue{Data: p.Data, ContentType: ct, If: p.If}
	if p.TTL > 0 {
		v.ExpiresAt = now.Add(p.TTL)
	}
	w, err := s.store.PutKey(ctx, org, id, key, v, now)
	if errors.Is(err, store.ErrPrecondition) {
		s.meter.Add(org, id, now, store.UsageCounts{Reads: 1})
	}
	return w, fromStore(err, "")
}

// ValidateContentType accepts what a header can carry: up to
// kv.MaxContentTypeLen printable ASCII bytes.
func ValidateContentType(ct string) error {
	if len(ct) > kv.MaxContentTypeLen {
		return kv.Errorf(kv.EInvalid, "Content-Type is %d bytes long; the limit is %d", len(ct), kv.MaxContentTypeLen)
	}
	for i := 0; i < len(ct); i++ {
		if ct[i] < 0x20 || ct[i] > 0x7e {
			return kv.Errorf(kv.EInvalid, "Content-Type must be printable ASCII")
		}
	}
	return nil
}

// DeleteKey removes key; a missing key is not an error. With a condition
// that does not hold, it removes nothing and returns an EPrecondition
// error carrying the key's current ETag (counting one read).
func (s *Service) DeleteKey(ctx context.Context, p Principal, id kv.ID, key string, cond store.Condition) error {
	if err := kv.ValidateKey(key); err != nil {
		return err
	}
	if err := p.key(id, key, kv.PermKeysWrite); err != nil {
		return err
	}
	org := p.Org
	now := s.now()
	if !cond.IsZero() {
		ops := []store.Op{{Kind: store.OpCheck, Key: key, If: cond}, {Kind: store.OpDelete, Key: key}}
		_, err := s.store.Apply(ctx, org, id, ops, now)
		if errors.Is(err, store.ErrPrecondition) {
			s.meter.Add(org, id, now, store.UsageCounts{Reads: 1})
		}
		return fromStore(err, "")
	}
	deleted, err := s.store.DeleteKey(ctx, org, id, key, now)
	if err == nil && !deleted { // the store counts the deletes that change something
		s.meter.Add(org, id, now, store.UsageCounts{Deletes: 1})
	}
	return fromStore(err, "")
}

// KeyPage is one page of a key listing. Cursor is set when More is.
type KeyPage struct {
	Keys   []kv.KeyInfo
	More   bool
	Cursor string
}

// ListKeys returns up to limit keys of namespace id starting with prefix,
// after the position in cursor ("" for the first page). Limits over
// kv.MaxListLimit are clamped.
func (s *Service) ListKeys(ctx context.Context, p Principal, id kv.ID, prefix, cursor string, limit int) (KeyPage, error) {
	if err := p.namespace(id, kv.PermKeysList); err != nil {
		return KeyPage{}, err
	}
	if err := p.listPrefix(prefix); err != nil {
		return KeyPage{}, err
	}
	org := p.Org
	if limit < 1 {
		return KeyPage{}, kv.Errorf(kv.EInvalid, "limit must be an integer from 1 to %d", kv.MaxListLimit).WithParam("limit")
	}
	limit = min(limit, kv.MaxListLimit)
	if len(prefix) > kv.MaxKeyLen {
		return KeyPage{}, kv.Errorf(kv.EInvalid, "prefix is longer than any key can be (%d characters)", kv.MaxKeyLen).WithParam("prefix")
	}
	after := ""
	if cursor != "" {
		var err error
		if after, err = DecodeCursor(id, prefix, cursor); err != nil {
			return KeyPage{}, err
		}
	}
	now := s.now()
	keys, more, err := s.store.ListKeys(ctx, org, id, prefix, after, limit, now)
	if err != nil {
		return KeyPage{}, fromStore(err, "")
	}
	s.meter.Add(org, id, now, store.UsageCounts{Lists: 1})
	page := KeyPage{Keys: keys, More: more}
	if more && len(keys) > 0 {
		page.Cursor = EncodeCursor(id, prefix, keys[len(keys)-1].Key)
	}
	return page, nil
}
