package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio/internal/grid"
	"github.com/tinylib/msgp/msgp"
)

// runner runs client scenarios against one remote connection.
type runner struct {
	ctx     context.Context
	conn    *grid.Connection
	tbl     *handlerTable
	n       int // -n, -1 = default
	size    int // -payload-size, -1 = default
	timeout time.Duration
	// bench-* scenarios: measured window and warm-up before it
	duration, warmup time.Duration

	passed, failed int
}

var scenarios = map[string]func(*runner){
	"echo":            scEcho,
	"error":           scError,
	"subroute":        scSubroute,
	"typed":           scTyped,
	"concurrent":      scConcurrent,
	"stream-echo":     scStreamEcho,
	"stream-noinput":  scStreamNoInput,
	"stream-fail":     scStreamFail,
	"stream-subroute": scStreamSubroute,
	"stream-cancel":   scStreamCancel,
	"stream-ping":     scStreamPing,
	"deadline":        scDeadline,
	"bench-echo":      scBenchEcho,
	"bench-stream":    scBenchStream,
}

// scenarioOrder is the order "all" runs in. Scenarios not listed here (the
// slow ones) run only when named.
var scenarioOrder = []string{
	"echo", "error", "subroute", "typed", "concurrent",
	"stream-echo", "stream-noinput", "stream-fail", "stream-subroute", "stream-cancel", "deadline",
}

// allScenarios is what "all" runs.
func allScenarios() []string { return append([]string(nil), scenarioOrder...) }

// scenarioNames lists every scenario: those of "all" first, then the rest.
func scenarioNames() []string {
	names := append([]string(nil), scenarioOrder...)
	if len(names) != len(scenarios) {
		for k := range scenarios {
			found := false
			for _, n := range names {
				found = found || n == k
			}
			if !found {
				names = append(names, k)
			}
		}
		sort.Strings(names[len(scenarioOrder):])
	}
	return names
}

func (r *runner) count(def int) int {
	if r.n >= 0 {
		return r.n
	}
	return def
}

func (r *runner) itemSize(def int) int {
	if r.size >= 0 {
		return r.size
	}
	return def
}

func (r *runner) caseCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.ctx, r.timeout)
}

// report prints one result line. ok is err == nil.
func (r *runner) report(scenario, cas string, start time.Time, err error, detail map[string]any) {
	res := map[string]any{
		"scenario":   scenario,
		"ok":         err == nil,
		"elapsed_ms": float64(time.Since(start).Microseconds()) / 1000,
	}
	if cas != "" {
		res["case"] = cas
	}
	if detail != nil {
		res["detail"] = detail
	}
	if err != nil {
		res["error"] = err.Error()
		r.failed++
	} else {
		r.passed++
	}
	emit(res)
}

// remoteErrText returns the text of a remote error, or "" if err is not one.
// The grid package hands out remote errors both as grid.RemoteErr values
// (error responses, stream errors) and as *grid.RemoteErr (MuxConnectError),
// and grid.IsRemoteErr only recognises the former.
func remoteErrText(err error) (string, bool) {
	if re := grid.IsRemoteErr(err); re != nil {
		return string(*re), true
	}
	var p *grid.RemoteErr
	if errors.As(err, &p) && p != nil {
		return string(*p), true
	}
	return "", false
}

func errString(err error) any {
	if err == nil {
		return nil
	}
	return err.Error()
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// ---- single requests ----

func scEcho(r *runner) {
	h := r.tbl.get("echo")
	type tc struct {
		name    string
		payload []byte
	}
	var cases []tc
	if r.size >= 0 {
		cases = []tc{{fmt.Sprintf("size=%d", r.size), randomBytes(r.size)}}
	} else {
		cases = []tc{
			{"absent", nil},
			{"empty", []byte{}},
			{"size=512", randomBytes(512)},
			{"size=102400", randomBytes(100 << 10)},
		}
	}
	for _, c := range cases {
		ctx, cancel := r.caseCtx()
		start := time.Now()
		resp, err := r.conn.Request(ctx, h.hid(), c.payload)
		cancel()
		detail := map[string]any{"sent_len": len(c.payload), "recv_len": len(resp), "recv_absent": resp == nil}
		if err == nil && !bytes.Equal(resp, c.payload) {
			err = errors.New("response differs from request")
		}
		r.report("echo", c.name, start, err, detail)
	}
}

func scError(r *runner) {
	h := r.tbl.get("error")
	{
		ctx, cancel := r.caseCtx()
		start := time.Now()
		resp, err := r.conn.Request(ctx, h.hid(), []byte("x"))
		cancel()
		text, isRemote := remoteErrText(err)
		detail := map[string]any{"want": h.ErrorText, "got": errString(err), "remote_error": isRemote, "recv_len": len(resp)}
		var fail error
		switch {
		case err == nil:
			fail = errors.New("expected a remote error, got success")
		case !isRemote:
			fail = fmt.Errorf("expected a remote error, got local error: %v", err)
		case text != h.ErrorText:
			fail = fmt.Errorf("remote error text %q, want %q", text, h.ErrorText)
		}
		r.report("error", "fixed-text", start, fail, detail)
	}
	// A handler id the remote does not register (LockLock) must come back
	// as a remote error (MuxConnectError); Go's own text is given for reference.
	{
		ctx, cancel := r.caseCtx()
		start := time.Now()
		_, err := r.conn.Request(ctx, grid.HandlerLockLock, nil)
		cancel()
		text, isRemote := remoteErrText(err)
		goText := "Invalid Handler for type: LockLock"
		detail := map[string]any{"got": errString(err), "remote_error": isRemote, "go_text": goText, "matches_go_text": text == goText}
		var fail error
		if !isRemote {
			fail = fmt.Errorf("expected a remote error for an unregistered handler, got %v", err)
		}
		r.report("error", "unregistered-handler", start, fail, detail)
	}
	// A subroute the remote does not register.
	{
		sh := r.tbl.get("subroute")
		ctx, cancel := r.caseCtx()
		start := time.Now()
		_, err := r.conn.Subroute("disk/unregistered").Request(ctx, sh.hid(), []byte("x"))
		cancel()
		text, isRemote := remoteErrText(err)
		detail := map[string]any{"got": errString(err), "remote_error": isRemote, "go_text_prefix": "Invalid Handler for type: [", "matches_go_text": strings.HasPrefix(text, "Invalid Handler for type: [")}
		var fail error
		if !isRemote {
			fail = fmt.Errorf("expected a remote error for an unregistered subroute, got %v", err)
		}
		r.report("error", "unregistered-subroute", start, fail, detail)
	}
}

func scSubroute(r *runner) {
	h := r.tbl.get("subroute")
	payload := []byte("hello grid")
	for _, s := range h.Subroutes {
		ctx, cancel := r.caseCtx()
		start := time.Now()
		resp, err := r.conn.Subroute(s).Request(ctx, h.hid(), payload)
		cancel()
		want := s + ":" + string(payload)
		if err == nil && string(resp) != want {
			err = fmt.Errorf("got %q, want %q", resp, want)
		}
		r.report("subroute", s, start, err, map[string]any{"got": string(resp)})
	}
	// Route built in two steps ("disk" then "1") must hash the same as "disk/1".
	if len(h.Subroutes) > 0 {
		s := h.Subroutes[0]
		var first, rest string
		for i := 0; i < len(s); i++ {
			if s[i] == '/' {
				first, rest = s[:i], s[i+1:]
				break
			}
		}
		if first != "" {
			ctx, cancel := r.caseCtx()
			start := time.Now()
			resp, err := r.conn.Subroute(first).Subroute(rest).Request(ctx, h.hid(), payload)
			cancel()
			want := s + ":" + string(payload)
			if err == nil && string(resp) != want {
				err = fmt.Errorf("got %q, want %q", resp, want)
			}
			r.report("subroute", "nested "+first+" + "+rest, start, err, map[string]any{"got": string(resp)})
		}
	}
}

func scTyped(r *runner) {
	th := typedHandler(r.tbl)
	cases := []struct {
		name string
		req  TypedMsg
	}{
		{"basic", TypedMsg{Name: "grid", Count: 41, Tags: []string{"a", "b"}}},
		{"empty-tags", TypedMsg{Name: "", Count: 0, Tags: []string{}}},
		{"int16-count", TypedMsg{Name: "n", Count: 200, Tags: []string{"x"}}},
		{"negative", TypedMsg{Name: "négatif ✓", Count: -1000, Tags: []string{"", "z"}}},
		{"int64-count", TypedMsg{Name: "big", Count: 1 << 40, Tags: []string{"long tag " + string(bytes.Repeat([]byte("t"), 300))}}},
	}
	for _, c := range cases {
		req := c.req
		want := typedTransform(&req)
		ctx, cancel := r.caseCtx()
		start := time.Now()
		resp, err := th.Call(ctx, r.conn, &req)
		cancel()
		detail := map[string]any{"request": c.req}
		if err == nil {
			detail["response"] = resp
			if !reflect.DeepEqual(resp, want) {
				err = fmt.Errorf("got %+v, want %+v", *resp, *want)
			}
		}
		r.report("typed", c.name, start, err, detail)
	}
}

func scConcurrent(r *runner) {
	h := r.tbl.get("echo")
	n := r.count(10000)
	size := r.itemSize(64)
	if size < 8 {
		size = 8
	}
	ctx, cancel := r.caseCtx()
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	var okCount, mismatch, failed atomic.Int64
	var firstErr atomic.Pointer[string]
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := make([]byte, size)
			binary.BigEndian.PutUint64(p, uint64(i))
			for j := 8; j < size; j++ {
				p[j] = byte(i + j)
			}
			resp, err := r.conn.Request(ctx, h.hid(), p)
			switch {
			case err != nil:
				failed.Add(1)
				s := err.Error()
				firstErr.CompareAndSwap(nil, &s)
			case !bytes.Equal(resp, p):
				mismatch.Add(1)
			default:
				okCount.Add(1)
			}
		}(i)
	}
	wg.Wait()
	el := time.Since(start)
	detail := map[string]any{
		"n": n, "payload_size": size, "ok": okCount.Load(), "mismatched": mismatch.Load(), "failed": failed.Load(),
		"requests_per_s": float64(n) / el.Seconds(),
	}
	var err error
	if okCount.Load() != int64(n) {
		if p := firstErr.Load(); p != nil {
			detail["first_error"] = *p
		}
		err = fmt.Errorf("%d of %d requests did not echo correctly", int64(n)-okCount.Load(), n)
	}
	r.report("concurrent", fmt.Sprintf("n=%d", n), start, err, detail)
}

// ---- streams ----

// streamItem is item i of the stream-echo scenario; item 0 is present but
// empty, which exercises FlagPayloadIsZero in both directions.
func streamItem(i, size int) []byte {
	if i == 0 {
		return []byte{}
	}
	b := []byte("item-" + strconv.Itoa(i))
	for len(b) < size {
		b = append(b, byte('a'+len(b)%26))
	}
	return b
}

func scStreamEcho(r *runner) {
	h := r.tbl.get("stream-echo")
	n := r.count(10000)
	size := r.itemSize(32)
	ctx, cancel := r.caseCtx()
	defer cancel()
	start := time.Now()
	st, err := r.conn.NewStream(ctx, h.hid(), nil)
	if err != nil {
		r.report("stream-echo", fmt.Sprintf("n=%d", n), start, err, nil)
		return
	}
	sendErr := make(chan error, 1)
	go func() {
		defer close(st.Requests)
		for i := 0; i < n; i++ {
			if err := st.Send(streamItem(i, size)); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	got := 0
	err = st.Results(func(b []byte) error {
		want := streamItem(got, size)
		if !bytes.Equal(b, want) {
			return fmt.Errorf("item %d: got %q, want %q", got, b, want)
		}
		got++
		return nil
	})
	if se := <-sendErr; err == nil && se != nil {
		err = fmt.Errorf("send: %w", se)
	}
	el := time.Since(start)
	detail := map[string]any{
		"n": n, "item_size": size, "received": got, "items_per_s": float64(n) / el.Seconds(),
		"in_capacity": h.InCapacity, "out_capacity": h.OutCapacity,
	}
	err = excuseRace(ctx, err, got, n, detail)
	if err == nil && got != n {
		err = fmt.Errorf("received %d items, want %d", got, n)
	}
	r.report("stream-echo", fmt.Sprintf("n=%d", n), start, err, detail)
}

// spuriousCancel reports whether err is the context.Canceled that the Go
// caller can return from Stream.Results after a stream ended normally,
// although nobody cancelled ctx. It is a race inside the grid package: on
// the final EOF the reader closes the response channel while holding the
// mux lock; the stream goroutine, woken by that, calls deleteMux ->
// muxClient.close(), whose TryLock fails while the reader still holds the
// lock, so close() cancels the stream context with context.Canceled, and
// Results may see that before the closed channel. Seen about once in 500
// streams against a fast callee.
func spuriousCancel(ctx context.Context, err error) bool {
	return errors.Is(err, context.Canceled) && ctx.Err() == nil
}

// excuseRace clears err when it is spuriousCancel and every item arrived,
// noting it in detail.
func excuseRace(ctx context.Context, err error, got, want int, detail map[string]any) error {
	if err != nil && got == want && spuriousCancel(ctx, err) {
		detail["go_caller_eof_race"] = err.Error()
		return nil
	}
	return err
}

// collectInts reads a stream whose items are msgpack integers 0, 1, 2, ...
func collectInts(st *grid.Stream) (int, error) {
	got := 0
	err := st.Results(func(b []byte) error {
		v, rest, err := msgp.ReadIntBytes(b)
		if err != nil {
			return fmt.Errorf("item %d: %w", got, err)
		}
		if len(rest) != 0 || v != got {
			return fmt.Errorf("item %d: got %d (%d trailing bytes)", got, v, len(rest))
		}
		got++
		return nil
	})
	return got, err
}

func scStreamNoInput(r *runner) {
	h := r.tbl.get("stream-noinput")
	counts := []int{r.count(100)}
	if r.n < 0 {
		counts = append(counts, 0)
	}
	for _, n := range counts {
		ctx, cancel := r.caseCtx()
		start := time.Now()
		st, err := r.conn.NewStream(ctx, h.hid(), msgp.AppendInt(nil, n))
		got := 0
		if err == nil {
			got, err = collectInts(st)
		}
		el := time.Since(start)
		detail := map[string]any{"n": n, "received": got, "items_per_s": float64(got) / el.Seconds()}
		err = excuseRace(ctx, err, got, n, detail)
		cancel()
		if err == nil && got != n {
			err = fmt.Errorf("received %d items, want %d", got, n)
		}
		r.report("stream-noinput", fmt.Sprintf("n=%d", n), start, err, detail)
	}
	// Without the count payload the handler must fail with a remote error.
	{
		ctx, cancel := r.caseCtx()
		start := time.Now()
		st, err := r.conn.NewStream(ctx, h.hid(), nil)
		got := 0
		if err == nil {
			got, err = collectInts(st)
		}
		cancel()
		text, isRemote := remoteErrText(err)
		var fail error
		if !isRemote {
			fail = fmt.Errorf("expected a remote error, got %v", err)
		}
		r.report("stream-noinput", "missing-payload", start, fail, map[string]any{"received": got, "got": errString(err), "remote_error": isRemote, "text": text})
	}
}

func scStreamFail(r *runner) {
	h := r.tbl.get("stream-fail")
	ks := []int{r.count(5)}
	if r.n < 0 {
		ks = append(ks, 0)
	}
	for _, k := range ks {
		ctx, cancel := r.caseCtx()
		start := time.Now()
		st, err := r.conn.NewStream(ctx, h.hid(), msgp.AppendInt(nil, k))
		got := 0
		if err == nil {
			got, err = collectInts(st)
		}
		cancel()
		want := fmt.Sprintf(h.ErrorFormat, k)
		text, isRemote := remoteErrText(err)
		var fail error
		switch {
		case err == nil:
			fail = errors.New("stream ended without the expected error")
		case !isRemote:
			fail = fmt.Errorf("expected a remote error, got %v", err)
		case text != want:
			fail = fmt.Errorf("remote error %q, want %q", text, want)
		case got > k:
			fail = fmt.Errorf("received %d items before the error, want at most %d", got, k)
		}
		// The Go caller cancels the stream as soon as the error message
		// arrives, and Stream.Results then returns the error without
		// delivering items still buffered, so fewer than k items is normal here.
		r.report("stream-fail", fmt.Sprintf("k=%d", k), start, fail, map[string]any{"k": k, "received": got, "got": errString(err), "want": want, "items_may_be_dropped_by_go_caller": true})
	}
}

func scStreamSubroute(r *runner) {
	h := r.tbl.get("stream-subroute")
	n := r.count(10)
	for _, s := range h.Subroutes {
		ctx, cancel := r.caseCtx()
		start := time.Now()
		st, err := r.conn.Subroute(s).NewStream(ctx, h.hid(), msgp.AppendInt(nil, n))
		got := 0
		if err == nil {
			err = st.Results(func(b []byte) error {
				want := s + ":" + strconv.Itoa(got)
				if string(b) != want {
					return fmt.Errorf("item %d: got %q, want %q", got, b, want)
				}
				got++
				return nil
			})
		}
		detail := map[string]any{"n": n, "received": got}
		err = excuseRace(ctx, err, got, n, detail)
		cancel()
		if err == nil && got != n {
			err = fmt.Errorf("received %d items, want %d", got, n)
		}
		r.report("stream-subroute", s, start, err, detail)
	}
}

// remoteStats calls the optional stats handler on the remote.
func (r *runner) remoteStats() (*Stats, error) {
	h := r.tbl.get("stats")
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	b, err := r.conn.Request(ctx, h.hid(), nil)
	if err != nil {
		return nil, err
	}
	var st Stats
	if _, err := st.UnmarshalMsg(b); err != nil {
		return nil, err
	}
	return &st, nil
}

var errStopReading = errors.New("interop: caller stopped reading")

func scStreamCancel(r *runner) {
	noinput := r.tbl.get("stream-noinput")
	echo := r.tbl.get("stream-echo")
	after := r.count(10)

	type tc struct {
		name string
		run  func(ctx context.Context, cancel context.CancelFunc) (int, error, error) // received, stream error, unexpected
	}
	cases := []tc{
		{"callback-error", func(ctx context.Context, cancel context.CancelFunc) (int, error, error) {
			// Endless stream; Results' callback returns an error after `after` items.
			st, err := r.conn.NewStream(ctx, noinput.hid(), msgp.AppendInt(nil, -1))
			if err != nil {
				return 0, nil, err
			}
			got := 0
			err = st.Results(func([]byte) error {
				got++
				if got >= after {
					return errStopReading
				}
				return nil
			})
			if !errors.Is(err, errStopReading) {
				return got, err, fmt.Errorf("Results returned %v, want the callback's error", err)
			}
			return got, err, nil
		}},
		{"context-cancel", func(ctx context.Context, cancel context.CancelFunc) (int, error, error) {
			st, err := r.conn.NewStream(ctx, noinput.hid(), msgp.AppendInt(nil, -1))
			if err != nil {
				return 0, nil, err
			}
			got := 0
			err = st.Results(func([]byte) error {
				got++
				if got == after {
					cancel()
				}
				return nil
			})
			if !errors.Is(err, context.Canceled) {
				return got, err, fmt.Errorf("Results returned %v, want context.Canceled", err)
			}
			return got, err, nil
		}},
		{"deadline", func(ctx context.Context, cancel context.CancelFunc) (int, error, error) {
			// A stream with a 300 ms deadline (sent as DeadlineMS) that never ends by itself.
			dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer dcancel()
			st, err := r.conn.NewStream(dctx, noinput.hid(), msgp.AppendInt(nil, -1))
			if err != nil {
				return 0, nil, err
			}
			// The Go caller may end such a stream with context.DeadlineExceeded,
			// "remote disconnected", or even nil (when the callee's
			// DisconnectClientMux wins the race), so only the remote
			// cancellation (checked through stats below) is asserted.
			got, err := collectInts(st)
			return got, err, nil
		}},
		{"two-way-cancel", func(ctx context.Context, cancel context.CancelFunc) (int, error, error) {
			st, err := r.conn.NewStream(ctx, echo.hid(), nil)
			if err != nil {
				return 0, nil, err
			}
			// Send items but never close the input; cancel after `after` echoes.
			go func() {
				for i := 1; ; i++ {
					if st.Send([]byte("x"+strconv.Itoa(i))) != nil {
						return
					}
				}
			}()
			got := 0
			err = st.Results(func([]byte) error {
				got++
				if got == after {
					cancel()
				}
				return nil
			})
			if !errors.Is(err, context.Canceled) {
				return got, err, fmt.Errorf("Results returned %v, want context.Canceled", err)
			}
			return got, err, nil
		}},
	}
	for _, c := range cases {
		before, statsErr := r.remoteStats()
		ctx, cancel := r.caseCtx()
		start := time.Now()
		got, streamErr, fail := c.run(ctx, cancel)
		cancel()
		detail := map[string]any{"received": got, "stream_error": errString(streamErr)}
		if fail == nil {
			// Confirm through the remote's stats that its handler saw the cancellation and returned.
			if statsErr != nil {
				detail["remote_check"] = "skipped: stats handler unavailable: " + statsErr.Error()
			} else {
				deadline := time.Now().Add(10 * time.Second)
				for {
					now, err := r.remoteStats()
					if err != nil {
						fail = fmt.Errorf("stats: %w", err)
						break
					}
					if now.Active <= before.Active && now.Cancelled > before.Cancelled && now.Started > before.Started {
						detail["remote_check"] = "ok"
						detail["remote_stats"] = now
						break
					}
					if time.Now().After(deadline) {
						fail = fmt.Errorf("remote handler not cancelled: before %+v, now %+v", *before, *now)
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}
		if fail == nil {
			// The connection must still work.
			ectx, ecancel := r.caseCtx()
			resp, err := r.conn.Request(ectx, r.tbl.get("echo").hid(), []byte("still alive"))
			ecancel()
			if err != nil || string(resp) != "still alive" {
				fail = fmt.Errorf("echo after cancel: %q, %v", resp, err)
			}
		}
		r.report("stream-cancel", c.name, start, fail, detail)
	}
}

// scStreamPing opens a two-way stream without a deadline (DeadlineMS 0),
// sends one item, stays idle for n seconds (default 50) and then sends a
// second item and closes its input. While idle, nothing but pings keeps the
// stream and the connection alive: the Go caller pings the stream every 15 s
// and fails it once nothing (pong or item) was heard for more than 30 s, and
// both sides ping the connection every 10 s and drop it after 20 s without a
// pong. The case passes if both items are echoed and the stream ends cleanly.
func scStreamPing(r *runner) {
	h := r.tbl.get("stream-echo")
	secs := r.count(50)
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	// A safety stop that does not give the stream a deadline.
	safety := time.AfterFunc(time.Duration(secs)*time.Second+r.timeout, cancel)
	defer safety.Stop()
	start := time.Now()
	st, err := r.conn.NewStream(ctx, h.hid(), nil)
	if err != nil {
		r.report("stream-ping", fmt.Sprintf("idle=%ds", secs), start, err, nil)
		return
	}
	sendErr := make(chan error, 1)
	go func() {
		defer close(st.Requests)
		if err := st.Send([]byte("before-idle")); err != nil {
			sendErr <- err
			return
		}
		select {
		case <-time.After(time.Duration(secs) * time.Second):
		case <-ctx.Done():
			sendErr <- context.Cause(ctx)
			return
		}
		sendErr <- st.Send([]byte("after-idle"))
	}()
	var got []string
	err = st.Results(func(b []byte) error {
		got = append(got, string(b))
		return nil
	})
	if se := <-sendErr; err == nil && se != nil {
		err = fmt.Errorf("send: %w", se)
	}
	detail := map[string]any{"idle_seconds": secs, "received": got, "state": stateName(r.conn.State())}
	err = excuseRace(ctx, err, len(got), 2, detail)
	if err == nil && (len(got) != 2 || got[0] != "before-idle" || got[1] != "after-idle") {
		err = fmt.Errorf("received %q, want [before-idle after-idle]", got)
	}
	r.report("stream-ping", fmt.Sprintf("idle=%ds", secs), start, err, detail)
}
