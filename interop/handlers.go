package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/minio/minio/internal/grid"
	"github.com/tinylib/msgp/msgp"
)

// Recycle makes grid.NewSingleHandler allocate a fresh TypedMsg for every
// request instead of pooling them (a pooled value would keep fields that a
// request leaves out).
func (*TypedMsg) Recycle() {}

func newTyped() *TypedMsg { return &TypedMsg{} }

// typedHandler is the caller and callee side of the "typed" handler.
func typedHandler(tbl *handlerTable) *grid.SingleHandler[*TypedMsg, *TypedMsg] {
	return grid.NewSingleHandler[*TypedMsg, *TypedMsg](tbl.get("typed").hid(), newTyped, newTyped)
}

// typedTransform is what the typed handler computes.
func typedTransform(req *TypedMsg) *TypedMsg {
	tags := make([]string, 0, len(req.Tags)+1)
	tags = append(tags, req.Tags...)
	return &TypedMsg{Name: req.Name, Count: req.Count + 1, Tags: append(tags, "ok")}
}

// Stream handler accounting, reported by the "stats" handler.
var streamStarted, streamActive, streamCancelled atomic.Int64

func counted(h grid.StreamHandlerFn) grid.StreamHandlerFn {
	return func(ctx context.Context, payload []byte, in <-chan []byte, out chan<- []byte) *grid.RemoteErr {
		streamStarted.Add(1)
		streamActive.Add(1)
		defer func() {
			if ctx.Err() != nil {
				streamCancelled.Add(1)
			}
			streamActive.Add(-1)
		}()
		return h(ctx, payload, in, out)
	}
}

// readCount decodes the msgpack integer that some stream handlers take as
// their initial payload.
func readCount(payload []byte) (int, *grid.RemoteErr) {
	if payload == nil {
		return 0, grid.NewRemoteErrString("interop: missing count payload")
	}
	n, _, err := msgp.ReadIntBytes(payload)
	if err != nil {
		return 0, grid.NewRemoteErrf("interop: bad count payload: %v", err)
	}
	return n, nil
}

// sendOut sends b on out unless ctx ends first.
func sendOut(ctx context.Context, out chan<- []byte, b []byte) bool {
	select {
	case out <- b:
		return true
	case <-ctx.Done():
		return false
	}
}

func copyOrNil(p []byte) []byte {
	if p == nil {
		return nil
	}
	return append(make([]byte, 0, len(p)), p...)
}

// registerHandlers registers the handlers named by which ("all", "none" or a
// comma separated list) and returns the registered names.
func registerHandlers(m *grid.Manager, tbl *handlerTable, which string) ([]string, error) {
	want := map[string]bool{}
	switch which {
	case "all":
		for name := range tbl.Handlers {
			want[name] = true
		}
	case "none", "":
	default:
		for _, name := range splitList(which) {
			if _, ok := tbl.Handlers[name]; !ok {
				return nil, fmt.Errorf("unknown handler %q", name)
			}
			want[name] = true
		}
	}
	var done []string
	reg := func(name string, fn func(h handlerSpec) error) error {
		if !want[name] {
			return nil
		}
		if err := fn(tbl.get(name)); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		done = append(done, name)
		return nil
	}
	steps := []struct {
		name string
		fn   func(h handlerSpec) error
	}{
		{"echo", func(h handlerSpec) error {
			return m.RegisterSingleHandler(h.hid(), func(p []byte) ([]byte, *grid.RemoteErr) {
				return copyOrNil(p), nil
			})
		}},
		{"error", func(h handlerSpec) error {
			text := h.ErrorText
			return m.RegisterSingleHandler(h.hid(), func(p []byte) ([]byte, *grid.RemoteErr) {
				return nil, grid.NewRemoteErrString(text)
			})
		}},
		{"subroute", func(h handlerSpec) error {
			for _, s := range h.Subroutes {
				prefix := []byte(s + ":")
				err := m.RegisterSingleHandler(h.hid(), func(p []byte) ([]byte, *grid.RemoteErr) {
					return append(append(make([]byte, 0, len(prefix)+len(p)), prefix...), p...), nil
				}, s)
				if err != nil {
					return err
				}
			}
			return nil
		}},
		{"typed", func(h handlerSpec) error {
			return typedHandler(tbl).Register(m, func(req *TypedMsg) (*TypedMsg, *grid.RemoteErr) {
				return typedTransform(req), nil
			})
		}},
		{"stats", func(h handlerSpec) error {
			return m.RegisterSingleHandler(h.hid(), func(p []byte) ([]byte, *grid.RemoteErr) {
				st := Stats{
					Started:   int(streamStarted.Load()),
					Active:    int(streamActive.Load()),
					Cancelled: int(streamCancelled.Load()),
				}
				b, err := st.MarshalMsg(nil)
				if err != nil {
					return nil, grid.NewRemoteErr(err)
				}
				return b, nil
			})
		}},
		{"slow", func(h handlerSpec) error {
			return m.RegisterSingleHandler(h.hid(), func(p []byte) ([]byte, *grid.RemoteErr) {
				ms, rerr := readCount(p)
				if rerr != nil {
					return nil, rerr
				}
				time.Sleep(time.Duration(ms) * time.Millisecond)
				return copyOrNil(p), nil
			})
		}},
		{"stream-bench", func(h handlerSpec) error {
			return m.RegisterStreamingHandler(h.hid(), grid.StreamHandler{
				InCapacity:  h.InCapacity,
				OutCapacity: h.OutCapacity,
				Handle: func(ctx context.Context, payload []byte, _ <-chan []byte, out chan<- []byte) *grid.RemoteErr {
					size, rerr := readCount(payload)
					if rerr != nil {
						return rerr
					}
					if size < 0 {
						size = 0
					}
					item := randomBytes(size)
					for {
						// The grid recycles what it sends: hand it a copy each time.
						if !sendOut(ctx, out, append(grid.GetByteBuffer()[:0], item...)) {
							return nil
						}
					}
				},
			})
		}},
		{"stream-echo", func(h handlerSpec) error {
			return m.RegisterStreamingHandler(h.hid(), grid.StreamHandler{
				InCapacity:  h.InCapacity,
				OutCapacity: h.OutCapacity,
				Handle: counted(func(ctx context.Context, _ []byte, in <-chan []byte, out chan<- []byte) *grid.RemoteErr {
					for {
						select {
						case <-ctx.Done():
							return nil
						case b, ok := <-in:
							if !ok {
								return nil
							}
							if !sendOut(ctx, out, b) {
								return nil
							}
						}
					}
				}),
			})
		}},
		{"stream-noinput", func(h handlerSpec) error {
			return m.RegisterStreamingHandler(h.hid(), grid.StreamHandler{
				InCapacity:  h.InCapacity,
				OutCapacity: h.OutCapacity,
				Handle: counted(func(ctx context.Context, payload []byte, _ <-chan []byte, out chan<- []byte) *grid.RemoteErr {
					n, rerr := readCount(payload)
					if rerr != nil {
						return rerr
					}
					for i := 0; n < 0 || i < n; i++ {
						if !sendOut(ctx, out, msgp.AppendInt(nil, i)) {
							return nil
						}
					}
					return nil
				}),
			})
		}},
		{"stream-fail", func(h handlerSpec) error {
			format := h.ErrorFormat
			return m.RegisterStreamingHandler(h.hid(), grid.StreamHandler{
				InCapacity:  h.InCapacity,
				OutCapacity: h.OutCapacity,
				Handle: counted(func(ctx context.Context, payload []byte, _ <-chan []byte, out chan<- []byte) *grid.RemoteErr {
					k, rerr := readCount(payload)
					if rerr != nil {
						return rerr
					}
					for i := 0; i < k; i++ {
						if !sendOut(ctx, out, msgp.AppendInt(nil, i)) {
							return nil
						}
					}
					return grid.NewRemoteErrf(format, k)
				}),
			})
		}},
		{"stream-subroute", func(h handlerSpec) error {
			for _, s := range h.Subroutes {
				prefix := s + ":"
				err := m.RegisterStreamingHandler(h.hid(), grid.StreamHandler{
					Subroute:    s,
					InCapacity:  h.InCapacity,
					OutCapacity: h.OutCapacity,
					Handle: counted(func(ctx context.Context, payload []byte, _ <-chan []byte, out chan<- []byte) *grid.RemoteErr {
						n, rerr := readCount(payload)
						if rerr != nil {
							return rerr
						}
						for i := 0; i < n; i++ {
							if !sendOut(ctx, out, []byte(prefix+strconv.Itoa(i))) {
								return nil
							}
						}
						return nil
					}),
				})
				if err != nil {
					return err
				}
			}
			return nil
		}},
	}
	known := map[string]bool{}
	for _, s := range steps {
		known[s.name] = true
		if err := reg(s.name, s.fn); err != nil {
			return nil, err
		}
	}
	for name := range tbl.Handlers {
		if !known[name] {
			return nil, fmt.Errorf("handlers.json names %q, which gridpeer does not implement", name)
		}
	}
	sort.Strings(done)
	return done, nil
}
