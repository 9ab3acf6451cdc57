package coordinator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// The live page: plain HTML, CSS and JavaScript in the binary, no CDN, no
// inline script (the page is served with a strict Content-Security-Policy).
//
//go:embed web
var webFS embed.FS

// HTTP endpoints of every replica:
//
//	GET  /                    the live page (web/index.html, app.js, style.css)
//	GET  /healthz             200 "ok" while the server runs, with the raft state
//	GET  /status[?history=N]  Status as JSON (N committed points, default 500)
//	GET  /metrics             Prometheus
//	GET  /samples/latest.png  the newest sample grid a node published (404: none yet)
//	POST /stop                fail the job (bearer token; body {"reason": "…"})
func (s *Server) serveHTTP() error {
	ln, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("coordinator: http on %s: %w", s.cfg.HTTPAddr, err)
	}
	s.ln = ln
	s.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          zap.NewStdLog(s.log.Named("http")),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", zap.Error(err))
		}
	}()
	return nil
}

// Handler is the server's HTTP handler (tests and embedding use it directly).
func (s *Server) Handler() http.Handler {
	web, _ := fs.Sub(webFS, "web")
	files := http.FileServerFS(web)
	mux := http.NewServeMux()
	mux.Handle("GET /", files)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		id, _ := s.rep.Leader()
		fmt.Fprintf(w, "ok %s %s leader=%s\n", s.rep.ID(), s.rep.RaftState(), id)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		n := 500
		if v := r.URL.Query().Get("history"); v != "" {
			x, err := strconv.Atoi(v)
			if err != nil || x < 0 || x > keepHistory {
				http.Error(w, fmt.Sprintf("history=%q: want 0..%d", v, keepHistory), http.StatusBadRequest)
				return
			}
			n = x
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(s.status(n))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{Registry: s.metrics.reg}))
	mux.HandleFunc("GET /samples/latest.png", func(w http.ResponseWriter, r *http.Request) {
		sm := s.sample.Load()
		if sm == nil {
			http.Error(w, "no sample yet", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Crdgo-Step", strconv.FormatUint(sm.info.Step, 10))
		w.Write(sm.png)
	})
	mux.Handle("POST /stop", s.requireToken(http.HandlerFunc(s.handleStop)))
	return securityHeaders(mux)
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// requireToken admits a request carrying "Authorization: Bearer <token>".
// The comparison is over SHA-256 digests in constant time, so neither the
// token's bytes nor its length leak through timing.
func (s *Server) requireToken(h http.Handler) http.Handler {
	want := sha256.Sum256([]byte(s.cfg.HTTPToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.HTTPToken == "" {
			http.Error(w, "state-changing endpoints are disabled: start the coordinator with --http-token", http.StatusForbidden)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="crdgo"`)
			http.Error(w, "unauthorized: this endpoint needs Authorization: Bearer <token>", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// handleStop fails the job through raft, on the leader (forwarded there over
// NATS when this replica is not it).
func (s *Server) handleStop(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Reason string `json:"reason"`
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 4<<10))
	if err == nil && len(bytes.TrimSpace(b)) > 0 {
		err = json.Unmarshal(b, &body)
	}
	if err != nil {
		http.Error(w, "body: want {\"reason\": \"…\"}: "+err.Error(), http.StatusBadRequest)
		return
	}
	if body.Reason == "" {
		body.Reason = "POST /stop"
	}
	msg := NewMessage(Stop{Reason: body.Reason})
	data, err := Encode(msg)
	if err == nil {
		err = msg.validate()
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	var out []byte
	if s.isLeader() {
		out = s.handle(ctx, "stop", data, true)
	} else if id, _ := s.rep.Leader(); id != "" {
		m, err := s.nc.RequestWithContext(ctx, peerSubject(s.cfg.Job, id, "stop"), data)
		if err != nil {
			http.Error(w, "forward to leader "+id+": "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		out = m.Data
	} else {
		http.Error(w, "no raft leader: retry", http.StatusServiceUnavailable)
		return
	}
	rep, err := DecodeReply(out)
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadGateway)
	case rep.Code == CodeOK:
		s.log.Warn("job stopped over HTTP", zap.String("reason", body.Reason), zap.String("remote", r.RemoteAddr))
		w.Header().Set("Content-Type", "application/json")
		w.Write(out)
	case rep.Code == CodeRejected:
		http.Error(w, rep.Error, http.StatusConflict)
	default:
		http.Error(w, rep.Error, http.StatusServiceUnavailable)
	}
}

// sample is the newest sample grid.
type sample struct {
	info SampleInfo
	png  []byte
}

// Sample headers on crdgo.<job>.samples.
const (
	sampleStepHeader = "Crdgo-Step"
	sampleNodeHeader = "Crdgo-Node"
	maxSampleSide    = 8192
)

// onSample keeps the newest valid sample grid: a PNG within MaxSampleBytes and
// 8192² pixels, from a step no older than the one held.
func (s *Server) onSample(m *nats.Msg) {
	step, err := strconv.ParseUint(m.Header.Get(sampleStepHeader), 10, 64)
	node := m.Header.Get(sampleNodeHeader)
	if err == nil && !validName(node, 64) {
		err = fmt.Errorf("node %q", node)
	}
	if err == nil && len(m.Data) > s.cfg.MaxSampleBytes {
		err = fmt.Errorf("%d bytes, the limit is %d", len(m.Data), s.cfg.MaxSampleBytes)
	}
	if err == nil {
		var c image.Config
		if c, err = png.DecodeConfig(bytes.NewReader(m.Data)); err == nil && (c.Width > maxSampleSide || c.Height > maxSampleSide) {
			err = fmt.Errorf("%d×%d pixels, at most %d per side", c.Width, c.Height, maxSampleSide)
		}
	}
	if err != nil {
		s.metrics.malformedInc()
		s.log.Debug("sample dropped", zap.Error(err))
		return
	}
	if old := s.sample.Load(); old != nil && old.info.Step > step {
		return
	}
	s.metrics.samples.Inc()
	s.sample.Store(&sample{info: SampleInfo{Step: step, Node: node, Bytes: len(m.Data), At: time.Now().UTC()}, png: bytes.Clone(m.Data)})
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
