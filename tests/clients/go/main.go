// databus-client-test drives databus with a real Go Redis client, with that
// client's default options, for tests/clients.rs:
//
//	databus-client-test go-redis|redigo
//
// Environment: PORT (databus on 127.0.0.1), N (messages), PUB_AUTH and
// SUB_AUTH (AUTH strings, passed as the connection password), BAD_AUTH (one
// with a wrong secret).
//
//  0. A connection with BAD_AUTH must fail with the server's WRONGPASS (not,
//     say, an EOF).
//  1. The subscriber connects and sends MGET three times on the idle topic;
//     each must be an empty list (databus must answer within the client's
//     default read timeout).
//  2. The publisher connects, sends SET k{i} v{i} for i in 0..N, closes.
//  3. The same subscriber connection pulls with MGET and commits the highest
//     offset of each partition of each batch (SET <partition> <offset>) until
//     N messages arrived, or fails after 60 s.
//  4. Prints one line on stdout: the JSON array of all the messages received,
//     in order.
//
// Any failure: a message on stderr and a non-zero exit status.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	redigo "github.com/gomodule/redigo/redis"
	"github.com/redis/go-redis/v9"
)

const (
	idleMgets = 3
	deadline  = 60 * time.Second
)

// subscriber is one dedicated subscriber connection.
type subscriber interface {
	mget() ([]string, error)
	commit(partition, offset int64) error
	close() error
}

type settings struct {
	addr    string
	n       int
	pubAuth string
	subAuth string
	badAuth string
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: databus-client-test go-redis|redigo")
	}
	var (
		connect func(settings) (subscriber, error)
		publish func(settings) error
		refused func(settings) error
	)
	switch os.Args[1] {
	case "go-redis":
		connect, publish, refused = goRedisSubscriber, goRedisPublish, goRedisRefused
	case "redigo":
		connect, publish, refused = redigoSubscriber, redigoPublish, redigoRefused
	default:
		fail("unknown client %q (want go-redis or redigo)", os.Args[1])
	}
	s, err := fromEnv()
	if err != nil {
		fail("%v", err)
	}
	if err := wrongPass(refused(s)); err != nil {
		fail("%s: %v", os.Args[1], err)
	}
	out, err := run(s, connect, publish)
	if err != nil {
		fail("%s: %v", os.Args[1], err)
	}
	fmt.Println(string(out))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "databus-client-test: "+format+"\n", args...)
	os.Exit(1)
}

func fromEnv() (settings, error) {
	var s settings
	for _, name := range []string{"PORT", "N", "PUB_AUTH", "SUB_AUTH", "BAD_AUTH"} {
		if os.Getenv(name) == "" {
			return s, fmt.Errorf("environment variable %s is not set", name)
		}
	}
	port, err := strconv.Atoi(os.Getenv("PORT"))
	if err != nil || port <= 0 || port > 65535 {
		return s, fmt.Errorf("PORT=%q is not a port number", os.Getenv("PORT"))
	}
	n, err := strconv.Atoi(os.Getenv("N"))
	if err != nil || n < 0 {
		return s, fmt.Errorf("N=%q is not a non-negative integer", os.Getenv("N"))
	}
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.n = n
	s.pubAuth = os.Getenv("PUB_AUTH")
	s.subAuth = os.Getenv("SUB_AUTH")
	s.badAuth = os.Getenv("BAD_AUTH")
	return s, nil
}

// wrongPass checks what a connection with a wrong secret failed with.
func wrongPass(err error) error {
	if err == nil {
		return errors.New("a connection with a wrong secret succeeded")
	}
	if !strings.Contains(err.Error(), "WRONGPASS") {
		return fmt.Errorf("a wrong secret failed with %q, want the server's WRONGPASS", err)
	}
	return nil
}

// message is the part of an MGET element the consumer needs.
type message struct {
	Partition *int64 `json:"partition"`
	Offset    *int64 `json:"offset"`
}

func run(s settings, connect func(settings) (subscriber, error), publish func(settings) error) ([]byte, error) {
	sub, err := connect(s)
	if err != nil {
		return nil, fmt.Errorf("subscriber connect: %w", err)
	}
	defer sub.close()

	for i := 0; i < idleMgets; i++ {
		start := time.Now()
		batch, err := sub.mget()
		if err != nil {
			return nil, fmt.Errorf("idle MGET %d of %d (after %v): %w", i+1, idleMgets, time.Since(start).Round(time.Millisecond), err)
		}
		if len(batch) != 0 {
			return nil, fmt.Errorf("idle MGET %d of %d returned %d messages, want none: %q", i+1, idleMgets, len(batch), batch)
		}
	}

	if err := publish(s); err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}

	got := make([]json.RawMessage, 0, s.n)
	end := time.Now().Add(deadline)
	for len(got) < s.n {
		if time.Now().After(end) {
			return nil, fmt.Errorf("only %d of %d messages after %v", len(got), s.n, deadline)
		}
		batch, err := sub.mget()
		if err != nil {
			return nil, fmt.Errorf("MGET after %d of %d messages: %w", len(got), s.n, err)
		}
		highest := map[int64]int64{}
		var order []int64
		for _, raw := range batch {
			var m message
			if err := json.Unmarshal([]byte(raw), &m); err != nil {
				return nil, fmt.Errorf("MGET element is not a JSON object: %v: %q", err, raw)
			}
			if m.Partition == nil || m.Offset == nil {
				return nil, fmt.Errorf("MGET element without partition or offset: %q", raw)
			}
			if o, seen := highest[*m.Partition]; !seen {
				order = append(order, *m.Partition)
				highest[*m.Partition] = *m.Offset
			} else if *m.Offset > o {
				highest[*m.Partition] = *m.Offset
			}
			got = append(got, json.RawMessage(raw))
		}
		for _, p := range order {
			if err := sub.commit(p, highest[p]); err != nil {
				return nil, fmt.Errorf("commit SET %d %d: %w", p, highest[p], err)
			}
		}
	}
	if err := sub.close(); err != nil {
		return nil, fmt.Errorf("subscriber close: %w", err)
	}
	return json.Marshal(got)
}

// ---------------------------------------------------------------------------
// go-redis v9, default options: RESP3 (HELLO 3 AUTH default <password>), a
// 5 s read timeout (3 s before v9.22), a pool; the subscriber takes one
// sticky connection.

type goRedisSub struct {
	client *redis.Client
	conn   *redis.Conn
	closed bool
}

func goRedisSubscriber(s settings) (subscriber, error) {
	client := redis.NewClient(&redis.Options{Addr: s.addr, Password: s.subAuth})
	return &goRedisSub{client: client, conn: client.Conn()}, nil
}

func (g *goRedisSub) mget() ([]string, error) {
	v, err := g.conn.Do(context.Background(), "MGET").Result()
	if err != nil {
		return nil, err
	}
	items, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("MGET reply is %T, not an array: %v", v, v)
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		str, ok := it.(string)
		if !ok {
			return nil, fmt.Errorf("MGET element is %T, not a string: %v", it, it)
		}
		out = append(out, str)
	}
	return out, nil
}

func (g *goRedisSub) commit(partition, offset int64) error {
	return expectOK(g.conn.Set(context.Background(), strconv.FormatInt(partition, 10), strconv.FormatInt(offset, 10), 0).Result())
}

func (g *goRedisSub) close() error {
	if g.closed {
		return nil
	}
	g.closed = true
	return errors.Join(g.conn.Close(), g.client.Close())
}

func goRedisRefused(s settings) error {
	c := redis.NewClient(&redis.Options{Addr: s.addr, Password: s.badAuth})
	defer c.Close()
	return c.Ping(context.Background()).Err()
}

func goRedisPublish(s settings) error {
	ctx := context.Background()
	pub := redis.NewClient(&redis.Options{Addr: s.addr, Password: s.pubAuth})
	for i := 0; i < s.n; i++ {
		k, v := fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)
		if err := expectOK(pub.Set(ctx, k, v, 0).Result()); err != nil {
			pub.Close()
			return fmt.Errorf("SET %s %s: %w", k, v, err)
		}
	}
	return pub.Close()
}

// ---------------------------------------------------------------------------
// redigo, default options: RESP2, AUTH <password>, no read timeout.

type redigoSub struct {
	conn   redigo.Conn
	closed bool
}

func redigoSubscriber(s settings) (subscriber, error) {
	c, err := redigo.Dial("tcp", s.addr, redigo.DialPassword(s.subAuth))
	if err != nil {
		return nil, err
	}
	return &redigoSub{conn: c}, nil
}

func (r *redigoSub) mget() ([]string, error) {
	return redigo.Strings(r.conn.Do("MGET"))
}

func (r *redigoSub) commit(partition, offset int64) error {
	return expectOK(redigo.String(r.conn.Do("SET", partition, offset)))
}

func (r *redigoSub) close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	return r.conn.Close()
}

func redigoRefused(s settings) error {
	c, err := redigo.Dial("tcp", s.addr, redigo.DialPassword(s.badAuth))
	if err == nil {
		c.Close()
	}
	return err
}

func redigoPublish(s settings) error {
	c, err := redigo.Dial("tcp", s.addr, redigo.DialPassword(s.pubAuth))
	if err != nil {
		return err
	}
	for i := 0; i < s.n; i++ {
		k, v := fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)
		if err := expectOK(redigo.String(c.Do("SET", k, v))); err != nil {
			c.Close()
			return fmt.Errorf("SET %s %s: %w", k, v, err)
		}
	}
	return c.Close()
}

func expectOK(reply string, err error) error {
	if err != nil {
		return err
	}
	if reply != "OK" {
		return fmt.Errorf("reply %q, want OK", reply)
	}
	return nil
}
