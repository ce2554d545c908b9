package main

//go:generate go run github.com/tinylib/msgp@v1.4.0 -file=$GOFILE -tests=false -io=false

// TypedMsg is the request and the response of the "typed" handler.
// It is encoded by msgp in its default MAP layout: a msgpack map with the
// keys "Name", "Count" and "Tags", in that order.
type TypedMsg struct {
	Name  string   `msg:"Name"`
	Count int      `msg:"Count"`
	Tags  []string `msg:"Tags"`
}

// Stats is the response of the "stats" handler (map layout).
type Stats struct {
	Started   int `msg:"Started"`   // stream handler invocations so far
	Active    int `msg:"Active"`    // stream handlers currently running
	Cancelled int `msg:"Cancelled"` // stream handlers that returned after their context ended
}
