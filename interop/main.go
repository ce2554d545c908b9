// Command gridpeer is a test peer for the Python "grid" library: it runs
// MinIO's own internal/grid package (pinned in go.mod) as one node of a grid,
// serves the interop handlers listed in handlers.json and, given -remote and
// -scenario, calls those handlers on a remote node and reports the results as
// JSON lines on stdout.
//
// The module path lies under github.com/minio/minio/ only so that Go lets it
// import github.com/minio/minio/internal/grid.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio/internal/grid"
	"github.com/minio/minio/internal/logger"
	"github.com/minio/minio/internal/logger/target/loggertypes"
)

//go:embed handlers.json
var handlersJSON []byte

// handlerSpec is one entry of handlers.json.
type handlerSpec struct {
	ID          int      `json:"id"`
	GoName      string   `json:"go_name"`
	Kind        string   `json:"kind"`
	Subroutes   []string `json:"subroutes"`
	InCapacity  int      `json:"in_capacity"`
	OutCapacity int      `json:"out_capacity"`
	ErrorText   string   `json:"error_text"`
	ErrorFormat string   `json:"error_format"`
	Optional    bool     `json:"optional"`
}

// handlerTable is handlers.json.
type handlerTable struct {
	MinioModule  string                 `json:"minio_module"`
	MinioVersion string                 `json:"minio_version"`
	MinioCommit  string                 `json:"minio_commit"`
	Route        string                 `json:"route"`
	Handlers     map[string]handlerSpec `json:"handlers"`
}

func (t *handlerTable) get(name string) handlerSpec {
	h, ok := t.Handlers[name]
	if !ok {
		fatalf("handlers.json has no handler %q", name)
	}
	return h
}

func (h handlerSpec) hid() grid.HandlerID { return grid.HandlerID(h.ID) }

// ---- JSON line output ----

var outMu sync.Mutex

// emit writes one JSON object as a line on stdout.
func emit(v map[string]any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]any{"event": "internal-error", "error": err.Error()})
	}
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

// logLine writes one JSON object as a line on stderr.
func logLine(v map[string]any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	outMu.Lock()
	defer outMu.Unlock()
	os.Stderr.Write(append(b, '\n'))
}

func fatalf(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	emit(map[string]any{"event": "fatal", "error": msg})
	fmt.Fprintln(os.Stderr, "gridpeer:", msg)
	os.Exit(2)
}

// ---- grid log forwarding ----

// stderrTarget receives the grid package's internal log entries (which go
// through MinIO's logger) and prints them on stderr as JSON lines.
type stderrTarget struct{}

func (stderrTarget) String() string                 { return "gridpeer-stderr" }
func (stderrTarget) Endpoint() string               { return "" }
func (stderrTarget) Stats() loggertypes.TargetStats { return loggertypes.TargetStats{} }
func (stderrTarget) Init(context.Context) error     { return nil }
func (stderrTarget) IsOnline(context.Context) bool  { return true }
func (stderrTarget) Cancel()                        {}
func (stderrTarget) Type() loggertypes.TargetType   { return loggertypes.TargetConsole }
func (stderrTarget) Send(_ context.Context, e any) error {
	// Keep the level and the texts, drop MinIO's source trace.
	var entry struct {
		Level   string `json:"level"`
		Message string `json:"message"`
		Error   *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	line := map[string]any{"event": "grid-log"}
	raw, err := json.Marshal(e)
	if err == nil {
		err = json.Unmarshal(raw, &entry)
	}
	if err != nil {
		line["message"] = fmt.Sprint(e)
	} else {
		line["level"] = entry.Level
		if entry.Message != "" {
			line["message"] = entry.Message
		}
		if entry.Error != nil {
			line["error"] = entry.Error.Message
		}
	}
	logLine(line)
	return nil
}

// ---- version ----

// minioVersion returns the version of github.com/minio/minio linked in.
func minioVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/minio/minio" {
			if d.Replace != nil {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	return "unknown"
}

var stateNames = map[grid.State]string{
	grid.StateUnconnected:     "Unconnected",
	grid.StateConnecting:      "Connecting",
	grid.StateConnected:       "Connected",
	grid.StateConnectionError: "ConnectionError",
	grid.StateShutdown:        "Shutdown",
}

func stateName(s grid.State) string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("State(%d)", s)
}

// errAuth is the text MinIO's token validator reports; the acceptor sends it
// back as "auth token: <text>" when the handshake token is wrong.
var errAuth = errors.New("Authentication failed, check your access credentials")

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func main() {
	var (
		local         = flag.String("local", "", "this node's identity string, e.g. http://127.0.0.1:9001 (required)")
		hostsFlag     = flag.String("hosts", "", "comma separated identity strings of all grid nodes, including -local (default: -local plus -remote)")
		listenFlag    = flag.String("listen", "", "address to listen on (default: host:port of -local)")
		token         = flag.String("token", "interop-token", "token this node presents (Authorization: Bearer and handshake Token)")
		acceptToken   = flag.String("accept-token", "", "token this node accepts from peers (default: same as -token)")
		handlersFlag  = flag.String("handlers", "all", "handlers to register: all, none, or a comma separated list of names from handlers.json")
		tlsCert       = flag.String("tls-cert", "", "PEM certificate file to serve TLS with (use https:// identity strings)")
		tlsKey        = flag.String("tls-key", "", "PEM private key file for -tls-cert")
		tlsCA         = flag.String("tls-ca", "", "PEM CA bundle used to verify peers when dialing https:// nodes (default: system roots)")
		tlsInsecure   = flag.Bool("tls-insecure", false, "do not verify peer certificates when dialing")
		checkTime     = flag.Bool("check-time", false, "also reject upgrade requests whose X-Minio-Time is missing or more than 15 minutes off (MinIO's server wiring does this; the grid package does not)")
		remote        = flag.String("remote", "", "client mode: identity string of the node to run scenarios against")
		scenarioFlag  = flag.String("scenario", "all", "client mode: comma separated scenario names, or all")
		nFlag         = flag.Int("n", -1, "client mode: count for the scenario (requests, items, ...); -1 = scenario default")
		sizeFlag      = flag.Int("payload-size", -1, "client mode: payload/item size in bytes; -1 = scenario default")
		connectTO     = flag.Duration("connect-timeout", 30*time.Second, "client mode: how long to wait for the connection to -remote")
		scenarioTO    = flag.Duration("timeout", 60*time.Second, "client mode: time limit per scenario case")
		durationFlag  = flag.Duration("duration", 3*time.Second, "client mode: measured time of the bench-* scenarios")
		warmupFlag    = flag.Duration("warmup", time.Second, "client mode: warm-up time of the bench-* scenarios")
		logState      = flag.Bool("log-state", true, "print {\"event\":\"state\"} lines on stdout when a connection changes state")
		gridLog       = flag.Bool("grid-log", true, "print the grid package's internal log entries on stderr as JSON lines")
		printVersion  = flag.Bool("version", false, "print the pinned MinIO version and the handler table as JSON and exit")
		listScenarios = flag.Bool("list-scenarios", false, "print the scenario names and exit")
	)
	flag.Parse()

	var tbl handlerTable
	if err := json.Unmarshal(handlersJSON, &tbl); err != nil {
		fatalf("embedded handlers.json: %v", err)
	}
	if *printVersion {
		emit(map[string]any{"event": "version", "minio_version": minioVersion(), "table": tbl})
		return
	}
	if *listScenarios {
		emit(map[string]any{"event": "scenarios", "names": scenarioNames(), "all": allScenarios()})
		return
	}
	if v := minioVersion(); v != tbl.MinioVersion {
		logLine(map[string]any{"event": "warning", "warning": "linked minio version differs from handlers.json", "linked": v, "table": tbl.MinioVersion})
	}
	if *local == "" {
		fatalf("-local is required")
	}
	if *acceptToken == "" {
		*acceptToken = *token
	}
	hosts := splitList(*hostsFlag)
	if len(hosts) == 0 {
		hosts = []string{*local}
		if *remote != "" && *remote != *local {
			hosts = append(hosts, *remote)
		}
	}
	if *remote != "" {
		found := false
		for _, h := range hosts {
			found = found || h == *remote
		}
		if !found {
			fatalf("-remote %q is not in -hosts", *remote)
		}
	}
	listenAddr := *listenFlag
	if listenAddr == "" {
		u, err := url.Parse(*local)
		if err != nil || u.Host == "" {
			fatalf("cannot take a listen address from -local %q: %v", *local, err)
		}
		listenAddr = u.Host
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *gridLog {
		if err := logger.AddSystemTarget(ctx, stderrTarget{}); err != nil {
			fatalf("log target: %v", err)
		}
	}

	// TLS used when dialing https:// peers.
	var clientTLS *tls.Config
	if *tlsCA != "" || *tlsInsecure || *tlsCert != "" {
		clientTLS = &tls.Config{InsecureSkipVerify: *tlsInsecure, NextProtos: []string{"http/1.1"}}
		if *tlsCA != "" {
			pem, err := os.ReadFile(*tlsCA)
			if err != nil {
				fatalf("reading -tls-ca: %v", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				fatalf("-tls-ca %s holds no PEM certificate", *tlsCA)
			}
			clientTLS.RootCAs = pool
		}
	}

	authFn := func() string { return *token }
	netDialer := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}
	blockConnect := make(chan struct{})
	mgr, err := grid.NewManager(ctx, grid.ManagerOptions{
		Local:        *local,
		Hosts:        hosts,
		BlockConnect: blockConnect,
		RoutePath:    grid.RoutePath,
		Dialer:       grid.ConnectWS(grid.ContextDialer(netDialer.DialContext), authFn, clientTLS),
		AuthFn:       authFn,
		AuthToken: func(tok string) error {
			if tok != *acceptToken {
				return errAuth
			}
			return nil
		},
	})
	if err != nil {
		fatalf("grid.NewManager: %v", err)
	}

	registered, err := registerHandlers(mgr, &tbl, *handlersFlag)
	if err != nil {
		fatalf("registering handlers: %v", err)
	}

	// HTTP server with the grid handler on the grid route.
	gridHandler := mgr.Handler(func(r *http.Request) error {
		if r.Header.Get("Authorization") != "Bearer "+*acceptToken {
			return errAuth
		}
		if *checkTime {
			ns, err := strconv.ParseInt(r.Header.Get("X-Minio-Time"), 10, 64)
			if err != nil {
				return fmt.Errorf("bad X-Minio-Time: %w", err)
			}
			if d := time.Since(time.Unix(0, ns)); d > 15*time.Minute || d < -15*time.Minute {
				return fmt.Errorf("X-Minio-Time off by %v", d)
			}
		}
		return nil
	})
	mux := http.NewServeMux()
	mux.Handle(grid.RoutePath, gridHandler)
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		fatalf("listen %s: %v", listenAddr, err)
	}
	useTLS := *tlsCert != "" || *tlsKey != ""
	if useTLS {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			fatalf("loading -tls-cert/-tls-key: %v", err)
		}
		// HTTP/1.1 only: the WebSocket upgrade needs connection hijacking.
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fatalf("serve: %v", err)
		}
	}()
	// Handlers are in place and the listener is open: let connections proceed.
	close(blockConnect)

	targets := mgr.Targets()
	sort.Strings(targets)
	if *logState {
		for _, t := range targets {
			go watchState(ctx, t, mgr.Connection(t))
		}
	}
	emit(map[string]any{
		"event":         "ready",
		"local":         *local,
		"listen":        ln.Addr().String(),
		"hosts":         hosts,
		"targets":       targets,
		"tls":           useTLS,
		"pid":           os.Getpid(),
		"minio_version": minioVersion(),
		"handlers":      registered,
		"route":         grid.RoutePath,
	})

	if *remote == "" {
		<-ctx.Done()
		emit(map[string]any{"event": "stopped"})
		return
	}

	r := &runner{
		ctx:      ctx,
		conn:     mgr.Connection(*remote),
		tbl:      &tbl,
		n:        *nFlag,
		size:     *sizeFlag,
		timeout:  *scenarioTO,
		duration: *durationFlag,
		warmup:   *warmupFlag,
	}
	wctx, wcancel := context.WithTimeout(ctx, *connectTO)
	err = r.conn.WaitForConnect(wctx)
	wcancel()
	if err != nil {
		emit(map[string]any{"scenario": "connect", "ok": false, "error": err.Error(), "detail": map[string]any{"state": stateName(r.conn.State())}})
		emit(map[string]any{"event": "done", "passed": 0, "failed": 1})
		os.Exit(1)
	}
	names := splitList(*scenarioFlag)
	if len(names) == 1 && names[0] == "all" {
		names = allScenarios()
	}
	for _, name := range names {
		fn, ok := scenarios[name]
		if !ok {
			r.report(name, "", time.Now(), fmt.Errorf("unknown scenario %q (known: %s)", name, strings.Join(scenarioNames(), ",")), nil)
			continue
		}
		fn(r)
	}
	emit(map[string]any{"event": "done", "passed": r.passed, "failed": r.failed})
	if r.failed > 0 {
		os.Exit(1)
	}
}

// watchState prints a JSON line whenever the connection to remote changes state.
func watchState(ctx context.Context, remote string, c *grid.Connection) {
	prev := grid.State(^uint32(0))
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if s := c.State(); s != prev {
			emit(map[string]any{"event": "state", "remote": remote, "state": stateName(s), "code": uint32(s)})
			prev = s
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
