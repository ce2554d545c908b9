package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio/internal/grid"
	"github.com/tinylib/msgp/msgp"
)

// scDeadline lets a single request's deadline expire while the remote
// handler ("slow") is still working, then checks that a request within its
// deadline still succeeds. The callee is expected to drop the late response.
func scDeadline(r *runner) {
	h := r.tbl.get("slow")
	type tc struct {
		name     string
		sleepMS  int
		deadline time.Duration
		expire   bool
	}
	for _, c := range []tc{
		{"expires-on-callee", 600, 150 * time.Millisecond, true},
		{"within-deadline", 20, 5 * time.Second, false},
	} {
		ctx, cancel := context.WithTimeout(r.ctx, c.deadline)
		payload := msgp.AppendInt(nil, c.sleepMS)
		start := time.Now()
		resp, err := r.conn.Request(ctx, h.hid(), payload)
		el := time.Since(start)
		cancel()
		detail := map[string]any{"sleep_ms": c.sleepMS, "deadline_ms": c.deadline.Milliseconds(),
			"got": errString(err), "returned_after_ms": float64(el.Microseconds()) / 1000}
		var fail error
		switch {
		case c.expire && !errors.Is(err, context.DeadlineExceeded):
			fail = fmt.Errorf("expected context.DeadlineExceeded, got %v", err)
		case c.expire && el > time.Duration(c.sleepMS)*time.Millisecond-50*time.Millisecond:
			fail = fmt.Errorf("returned after %v: the deadline did not cut the call short", el)
		case !c.expire && err != nil:
			fail = err
		case !c.expire && !bytes.Equal(resp, payload):
			fail = fmt.Errorf("got %x, want %x", resp, payload)
		}
		r.report("deadline", c.name, start, fail, detail)
	}
	// Give the slow handler time to finish (and drop its late response),
	// then check the connection is unharmed.
	time.Sleep(600 * time.Millisecond)
	ctx, cancel := r.caseCtx()
	start := time.Now()
	resp, err := r.conn.Request(ctx, r.tbl.get("echo").hid(), []byte("after deadline"))
	cancel()
	if err == nil && string(resp) != "after deadline" {
		err = fmt.Errorf("echo after deadline: %q", resp)
	}
	r.report("deadline", "echo-after", start, err, nil)
}

func percentileUS(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	k := int(q*float64(len(sorted)-1) + 0.5)
	return float64(sorted[k]) / 1000
}

// scBenchEcho measures the echo handler with -n workers (default 1), each
// awaiting one -payload-size (default 512) request at a time, for -duration
// after -warmup. Reports requests/s and latency percentiles.
func scBenchEcho(r *runner) {
	h := r.tbl.get("echo")
	workers := r.count(1)
	size := r.itemSize(512)
	payload := randomBytes(size)
	var phase atomic.Int32 // 0 warm-up, 1 measuring, 2 stop
	var errCount atomic.Int64
	var firstErr atomic.Pointer[string]
	lats := make([][]int64, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			lat := make([]int64, 0, 1<<16)
			for phase.Load() != 2 {
				t0 := time.Now()
				resp, err := r.conn.Request(r.ctx, h.hid(), payload)
				d := time.Since(t0)
				if err == nil && !bytes.Equal(resp, payload) {
					err = errors.New("echo mismatch")
				}
				if err != nil {
					errCount.Add(1)
					s := err.Error()
					firstErr.CompareAndSwap(nil, &s)
					time.Sleep(time.Millisecond)
					continue
				}
				grid.PutByteBuffer(resp)
				if phase.Load() == 1 {
					lat = append(lat, d.Nanoseconds())
				}
			}
			lats[w] = lat
		}(w)
	}
	time.Sleep(r.warmup)
	t0 := time.Now()
	phase.Store(1)
	time.Sleep(r.duration)
	phase.Store(2)
	el := time.Since(t0)
	wg.Wait()
	var all []int64
	for _, l := range lats {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	detail := map[string]any{
		"concurrency": workers, "size": size, "requests": len(all), "seconds": el.Seconds(),
		"rps": float64(len(all)) / el.Seconds(), "p50_us": percentileUS(all, 0.5),
		"p99_us": percentileUS(all, 0.99), "errors": errCount.Load(),
	}
	var err error
	if p := firstErr.Load(); p != nil {
		detail["first_error"] = *p
		err = fmt.Errorf("%d requests failed, first: %s", errCount.Load(), *p)
	}
	r.report("bench-echo", fmt.Sprintf("c=%d", workers), start, err, detail)
}

// scBenchStream opens the stream-bench handler (-payload-size, default 64,
// byte items, sent as fast as the credits allow) and counts the items
// received during -duration after -warmup, then cancels the stream.
func scBenchStream(r *runner) {
	h := r.tbl.get("stream-bench")
	size := r.itemSize(64)
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	start := time.Now()
	st, err := r.conn.NewStream(ctx, h.hid(), msgp.AppendInt(nil, size))
	if err != nil {
		r.report("bench-stream", fmt.Sprintf("size=%d", size), start, err, nil)
		return
	}
	var count, bad atomic.Int64
	done := make(chan error, 1)
	go func() {
		done <- st.Results(func(b []byte) error {
			if len(b) != size {
				bad.Add(1)
			}
			count.Add(1)
			grid.PutByteBuffer(b)
			return nil
		})
	}()
	var early error
	ended := false
	select {
	case early = <-done:
		ended = true
	case <-time.After(r.warmup):
	}
	c0, t0 := count.Load(), time.Now()
	if !ended {
		select {
		case early = <-done:
			ended = true
		case <-time.After(r.duration):
		}
	}
	c1, el := count.Load(), time.Since(t0)
	cancel()
	if !ended {
		<-done
	} else if early == nil {
		early = errors.New("stream ended by itself")
	}
	n := c1 - c0
	detail := map[string]any{
		"size": size, "messages": n, "seconds": el.Seconds(), "msgs_per_s": float64(n) / el.Seconds(),
		"mb_per_s": float64(n) * float64(size) / el.Seconds() / 1e6, "out_capacity": h.OutCapacity,
	}
	var fail error
	switch {
	case early != nil:
		fail = fmt.Errorf("stream ended early: %v", early)
	case bad.Load() > 0:
		fail = fmt.Errorf("%d items of the wrong size", bad.Load())
	case n == 0:
		fail = errors.New("no items received")
	}
	r.report("bench-stream", fmt.Sprintf("size=%d", size), start, fail, detail)
}
