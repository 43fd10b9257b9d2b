package devserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
)

// PortSpan is the number of consecutive ports, starting at the frontend
// port, that a server claims: frontend, history, matching and worker gRPC
// ports at offsets 0–3 and their membership ports at offsets 4–7. The
// membership ports are reserved but not listened on, since the services
// find each other through static membership.
const PortSpan = 8

const (
	// Ports chosen by Start lie in [pickLow, pickHigh), below the ephemeral
	// ranges of Linux (32768–60999) and macOS/Windows (49152–65535), so that
	// outgoing connections do not take them between restarts.
	pickLow     = 20000
	pickHigh    = 32000
	pickRetries = 100
)

// portLayout is the set of ports of one server, all derived from the
// frontend port.
type portLayout struct {
	Frontend           int `json:"frontend"`
	History            int `json:"history"`
	Matching           int `json:"matching"`
	Worker             int `json:"worker"`
	FrontendMembership int `json:"frontend_membership"`
	HistoryMembership  int `json:"history_membership"`
	MatchingMembership int `json:"matching_membership"`
	WorkerMembership   int `json:"worker_membership"`
}

func layoutFrom(frontend int) portLayout {
	return portLayout{
		Frontend:           frontend,
		History:            frontend + 1,
		Matching:           frontend + 2,
		Worker:             frontend + 3,
		FrontendMembership: frontend + 4,
		HistoryMembership:  frontend + 5,
		MatchingMembership: frontend + 6,
		WorkerMembership:   frontend + 7,
	}
}

type namedPort struct {
	name string
	host string
	port int
}

// listened returns the ports the server listens on, with the address each
// one binds.
func (l portLayout) listened(host string) []namedPort {
	return []namedPort{
		{"frontend", host, l.Frontend},
		{"history", loopback, l.History},
		{"matching", loopback, l.Matching},
		{"worker", loopback, l.Worker},
	}
}

// reserved returns every port of the layout.
func (l portLayout) reserved(host string) []namedPort {
	return append(l.listened(host),
		namedPort{"frontend membership", loopback, l.FrontendMembership},
		namedPort{"history membership", loopback, l.HistoryMembership},
		namedPort{"matching membership", loopback, l.MatchingMembership},
		namedPort{"worker membership", loopback, l.WorkerMembership},
	)
}

// heldPorts are listeners kept open on a server's ports from the moment
// they are found free until the server is about to bind them, so that
// another process picking ports meanwhile (say, another server starting)
// finds them taken instead of binding them under it.
type heldPorts []net.Listener

// release closes the listeners; it may be called more than once.
func (h *heldPorts) release() {
	for _, ln := range *h {
		_ = ln.Close()
	}
	*h = nil
}

// hold listens on every one of ports and keeps them, or returns the first
// that cannot be listened on (and holds none).
func hold(ports []namedPort) (heldPorts, *namedPort, error) {
	var h heldPorts
	for i := range ports {
		p := &ports[i]
		ln, err := net.Listen("tcp", net.JoinHostPort(p.host, strconv.Itoa(p.port)))
		if err != nil {
			h.release()
			return nil, p, err
		}
		h = append(h, ln)
	}
	return h, nil, nil
}

// choosePorts returns the layout for an explicit frontend port, after
// checking that its ports are free, or picks a free layout when port is 0;
// either way its ports are held until the caller releases them.
func choosePorts(host string, port int) (portLayout, heldPorts, error) {
	if port != 0 {
		l := layoutFrom(port)
		h, p, err := hold(l.listened(host))
		if p != nil {
			return portLayout{}, nil, fmt.Errorf("devserver: port %d (%s, frontend port %d + %d) is not free: %w",
				p.port, p.name, port, p.port-port, err)
		}
		return l, h, nil
	}
	for range pickRetries {
		base := pickLow + PortSpan*rand.IntN((pickHigh-pickLow)/PortSpan)
		l := layoutFrom(base)
		if h, p, _ := hold(l.reserved(host)); p == nil {
			return l, h, nil
		}
	}
	return portLayout{}, nil, fmt.Errorf("devserver: found no %d free consecutive ports on %s in [%d, %d)",
		PortSpan, host, pickLow, pickHigh)
}

// persistentPorts returns the ports of the server on dir: the explicit port
// if given, else the ports remembered in dir, else newly chosen ones, held
// (see choosePorts). The result is remembered in dir, so that the next
// start reuses it.
func persistentPorts(dir, host string, port int) (portLayout, heldPorts, error) {
	path := filepath.Join(dir, PortsFile)
	remembered, err := readPorts(path)
	if err != nil {
		return portLayout{}, nil, err
	}
	var (
		l portLayout
		h heldPorts
	)
	switch {
	case port != 0:
		if l, h, err = choosePorts(host, port); err != nil {
			return portLayout{}, nil, err
		}
	case remembered != nil:
		l = layoutFrom(remembered.Frontend)
		var p *namedPort
		if h, p, err = hold(l.listened(host)); p != nil {
			return portLayout{}, nil, fmt.Errorf("devserver: port %d (%s) remembered for state directory %s in %s is not free: %w; "+
				"stop whatever uses it, or pass another port", p.port, p.name, dir, PortsFile, err)
		}
	default:
		if l, h, err = choosePorts(host, 0); err != nil {
			return portLayout{}, nil, err
		}
	}
	if remembered == nil || *remembered != l {
		if err := writePorts(path, l); err != nil {
			h.release()
			return portLayout{}, nil, err
		}
	}
	return l, h, nil
}

// readPorts reads a ports file; a missing file gives nil.
func readPorts(path string) (*portLayout, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("devserver: %w", err)
	}
	var l portLayout
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("devserver: %s: %w", path, err)
	}
	if l.Frontend <= 0 || l.Frontend+PortSpan-1 > 65535 {
		return nil, fmt.Errorf("devserver: %s: invalid frontend port %d", path, l.Frontend)
	}
	return &l, nil
}

// writePorts replaces the ports file atomically.
func writePorts(path string, l portLayout) error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("devserver: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("devserver: %w", err)
	}
	return nil
}
