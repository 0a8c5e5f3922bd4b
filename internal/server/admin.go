package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/service"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/pebble"
)

// The admin channel: on the embedded engine, whose directory one process
// holds, a running kvd serves `kvd token create|list|revoke` on a Unix
// socket in the store's directory (pebble.AdminSocket), mode 0600 in a
// directory of mode 0700, and answers only its own user and root (it checks
// the peer's credentials). On PostgreSQL the token commands go to the
// database itself, which every kvd reads.

// Tokens is what the token commands need of kvd: on a running kvd through
// its admin channel, or on a store opened directly.
type Tokens interface {
	Create(ctx context.Context, spec service.TokenSpec) (secret string, t kv.TokenRecord, err error)
	List(ctx context.Context, org string) ([]kv.TokenRecord, error)
	Revoke(ctx context.Context, id string) (kv.TokenRecord, error)
	Close() error
}

// OpenTokens reaches the tokens of the store cfg names: a running kvd's
// admin channel when there is one, else the store itself (for the
// embedded engine, only while no kvd runs on it).
func OpenTokens(ctx context.Context, cfg Config) (Tokens, error) {
	if !isPostgresURL(cfg.Store) && cfg.Store != "" {
		sock := filepath.Join(cfg.Store, pebble.AdminSocket)
		if c, err := dialAdmin(sock); err == nil {
			return c, nil
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	st, err := OpenStore(ctx, cfg)
	if errors.Is(err, ErrStoreLocked) {
		return nil, fmt.Errorf("a kvd holds %s, but its admin channel (%s) does not answer: is it an older kvd, or run by another user?", cfg.Store, pebble.AdminSocket)
	}
	if err != nil {
		return nil, err
	}
	return &directTokens{st: st, now: time.Now}, nil
}

// directTokens are the tokens of a store opened here.
type directTokens struct {
	st  store.Store
	now func() time.Time
}

func (d *directTokens) Create(ctx context.Context, spec service.TokenSpec) (string, kv.TokenRecord, error) {
	secret, t, err := service.CreateToken(ctx, d.st, spec, d.now())
	if err != nil {
		return "", kv.TokenRecord{}, err
	}
	return secret, service.TokenRecord(t, d.now()), nil
}

func (d *directTokens) List(ctx context.Context, org string) ([]kv.TokenRecord, error) {
	return service.ListTokens(ctx, d.st, org, d.now())
}

func (d *directTokens) Revoke(ctx context.Context, id string) (kv.TokenRecord, error) {
	return service.RevokeToken(ctx, d.st, id, d.now())
}

func (d *directTokens) Close() error { return d.st.Close() }

// adminRequest and adminAnswer are the channel's JSON.
type adminRequest struct {
	Org         string          `json:"org"`
	Name        string          `json:"name"`
	Permissions []kv.Permission `json:"permissions"`
	Namespaces  []kv.ID         `json:"namespaces"`
	Prefixes    []string        `json:"prefixes"`
	ExpiresIn   time.Duration   `json:"expires_in"`
}

type adminCreated struct {
	Secret string         `json:"secret"`
	Token  kv.TokenRecord `json:"token"`
}

// adminServer serves the admin channel.
type adminServer struct {
	ln   net.Listener
	srv  *http.Server
	path string
}

// startAdmin serves the admin channel of svc on the socket in dir. A
// socket left by a kvd that died is replaced: this process holds the
// store's lock.
func startAdmin(dir string, svc *service.Service, db *pebble.DB, log *slog.Logger) (*adminServer, error) {
	path := filepath.Join(dir, pebble.AdminSocket)
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin channel: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin channel: %w", err)
	}
	a := &adminServer{ln: ln, path: path}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /tokens", func(w http.ResponseWriter, r *http.Request) {
		var req adminRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			adminError(w, kv.Errorf(kv.EInvalid, "the request is not a token spec: %v", err))
			return
		}
		secret, t, err := svc.CreateToken(r.Context(), service.TokenSpec(req))
		if err != nil {
			adminError(w, err)
			return
		}
		adminJSON(w, adminCreated{secret, t})
	})
	mux.HandleFunc("GET /tokens", func(w http.ResponseWriter, r *http.Request) {
		list, err := svc.ListTokens(r.Context(), r.URL.Query().Get("org"))
		if err != nil {
			adminError(w, err)
			return
		}
		adminJSON(w, list)
	})
	mux.HandleFunc("POST /tokens/{id}/revoke", func(w http.ResponseWriter, r *http.Request) {
		t, err := svc.RevokeToken(r.Context(), r.PathValue("id"))
		if err != nil {
			adminError(w, err)
			return
		}
		adminJSON(w, t)
	})
	mux.HandleFunc("POST /backup", func(w http.ResponseWriter, r *http.Request) {
		var req adminBackup
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil || !filepath.IsAbs(req.Dir) {
			adminError(w, kv.Errorf(kv.EInvalid, "the request is not a backup's absolute directory"))
			return
		}
		if err := db.Checkpoint(r.Context(), req.Dir); err != nil {
			log.Warn("admin channel: backup failed", "dir", req.Dir, "err", err.Error())
			adminError(w, kv.Errorf(kv.EInternal, "%v", err))
			return
		}
		log.Info("admin channel: backup written", "dir", req.Dir)
		adminJSON(w, struct{}{})
	})
	a.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(c net.Conn, state http.ConnState) {
			if state == http.StateNew && !trustedPeer(c) {
				log.Warn("admin channel: refused a connection from another user")
				c.Close()
			}
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go a.srv.Serve(ln)
	return a, nil
}

func (a *adminServer) close() {
	a.srv.Close()
	os.Remove(a.path)
}

// trustedPeer reports whether the process at the other end of c runs as
// this process's user or as root.
func trustedPeer(c net.Conn) bool {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	uid := -1
	raw.Control(func(fd uintptr) {
		if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			uid = int(cred.Uid)
		}
	})
	return uid == 0 || uid == os.Getuid()
}

func adminJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func adminError(w http.ResponseWriter, err error) {
	var e *kv.Error
	if !errors.As(err, &e) {
		e = kv.Errorf(kv.EInternal, "%v", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Code.HTTPStatus())
	json.NewEncoder(w).Encode(e.Envelope())
}

// adminClient is the token commands' end of the channel.
type adminClient struct {
	hc *http.Client
}

func dialAdmin(path string) (*adminClient, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c.Close()
	return &adminClient{hc: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}, nil
}

func (c *adminClient) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://kvd"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin channel: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("admin channel: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var env kv.ErrorEnvelope
		if json.Unmarshal(b, &env) == nil && len(env.Errors) == 1 {
			return &kv.Error{Code: kv.ErrorCode(env.Errors[0].Code), Detail: env.Errors[0].Detail}
		}
		return fmt.Errorf("admin channel: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, out)
}

func (c *adminClient) Create(ctx context.Context, spec service.TokenSpec) (string, kv.TokenRecord, error) {
	var out adminCreated
	err := c.call(ctx, http.MethodPost, "/tokens", adminRequest(spec), &out)
	return out.Secret, out.Token, err
}

func (c *adminClient) List(ctx context.Context, org string) ([]kv.TokenRecord, error) {
	var out []kv.TokenRecord
	err := c.call(ctx, http.MethodGet, "/tokens?org="+url.QueryEscape(org), nil, &out)
	return out, err
}

func (c *adminClient) Revoke(ctx context.Context, id string) (kv.TokenRecord, error) {
	var out kv.TokenRecord
	err := c.call(ctx, http.MethodPost, "/tokens/"+url.PathEscape(id)+"/revoke", nil, &out)
	return out, err
}

func (c *adminClient) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}
