import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import io.lettuce.core.RedisClient;
import io.lettuce.core.RedisURI;
import io.lettuce.core.api.StatefulRedisConnection;
import io.lettuce.core.api.sync.RedisCommands;
import io.lettuce.core.codec.StringCodec;
import io.lettuce.core.output.ValueListOutput;
import io.lettuce.core.protocol.CommandType;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import redis.clients.jedis.DefaultJedisClientConfig;
import redis.clients.jedis.HostAndPort;
import redis.clients.jedis.Jedis;
import redis.clients.jedis.Protocol;

/**
 * Drives databus with a real Java Redis client, with that client's default options, for
 * tests/clients.rs:
 *
 * <pre>java -cp CLASSPATH ClientSession jedis|lettuce</pre>
 *
 * Environment: PORT (databus on 127.0.0.1), N (messages), PUB_AUTH and SUB_AUTH (AUTH strings,
 * passed as the connection password), BAD_AUTH (one with a wrong secret).
 *
 * <ol>
 *   <li>A connection with BAD_AUTH must fail with the server's WRONGPASS.
 *   <li>The subscriber connects and sends MGET three times on the idle topic; each must be an
 *       empty list (databus must answer within the client's default read timeout: 2 s for Jedis).
 *   <li>The publisher connects, sends SET k{i} v{i} for i in 0..N, closes.
 *   <li>The same subscriber connection pulls with MGET and commits the highest offset of each
 *       partition of each batch (SET &lt;partition&gt; &lt;offset&gt;) until N messages arrived,
 *       or fails after 60 s.
 *   <li>Prints one line on stdout: the JSON array of all the messages received, in order.
 * </ol>
 *
 * Any failure: a message on stderr and exit status 1.
 */
public final class ClientSession {
  static {
    // slf4j-simple: warnings and errors only, to stderr (stdout carries the result alone).
    System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
    System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
  }

  private static final int IDLE_MGETS = 3;
  private static final long DEADLINE_MS = 60_000;
  private static final ObjectMapper JSON = new ObjectMapper();

  /** One dedicated subscriber connection. */
  interface Subscriber extends AutoCloseable {
    List<String> mget();

    void commit(long partition, long offset);

    @Override
    void close();
  }

  interface Client {
    Subscriber subscriber(String host, int port, String auth);

    void publish(String host, int port, String auth, int n);

    /** Connects with {@code auth} and sends PING. */
    void ping(String host, int port, String auth);
  }

  public static void main(String[] args) {
    try {
      if (args.length != 1) {
        throw new IllegalArgumentException("usage: java ClientSession jedis|lettuce");
      }
      Client client;
      switch (args[0]) {
        case "jedis":
          client = new JedisClient();
          break;
        case "lettuce":
          client = new LettuceClient();
          break;
        default:
          throw new IllegalArgumentException("unknown client '" + args[0] + "' (want jedis or lettuce)");
      }
      String out = run(client);
      System.out.println(out);
      System.out.flush();
      System.exit(0);
    } catch (Throwable e) {
      System.err.println("ClientSession " + String.join(" ", args) + ": " + describe(e));
      e.printStackTrace(System.err);
      System.exit(1);
    }
  }

  private static String describe(Throwable e) {
    StringBuilder s = new StringBuilder(e.toString());
    for (Throwable c = e.getCause(); c != null && c != c.getCause(); c = c.getCause()) {
      s.append("; caused by ").append(c);
    }
    return s.toString();
  }

  private static String env(String name) {
    String v = System.getenv(name);
    if (v == null || v.isEmpty()) {
      throw new IllegalArgumentException("environment variable " + name + " is not set");
    }
    return v;
  }

  private static int intEnv(String name, int min, int max) {
    String v = env(name);
    try {
      int n = Integer.parseInt(v);
      if (n < min || n > max) {
        throw new NumberFormatException();
      }
      return n;
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(name + "='" + v + "' is not an integer in " + min + ".." + max);
    }
  }

  static String run(Client client) throws Exception {
    String host = "127.0.0.1";
    int port = intEnv("PORT", 1, 65535);
    int n = intEnv("N", 0, Integer.MAX_VALUE);
    String pubAuth = env("PUB_AUTH");
    String subAuth = env("SUB_AUTH");
    String badAuth = env("BAD_AUTH");
    RuntimeException refused = null;
    try {
      client.ping(host, port, badAuth);
    } catch (RuntimeException e) {
      refused = e;
    }
    if (refused == null) {
      throw new IllegalStateException("a connection with a wrong secret succeeded");
    }
    if (!describe(refused).contains("WRONGPASS")) {
      throw new IllegalStateException("a wrong secret failed with " + describe(refused) + ", want WRONGPASS", refused);
    }

    ArrayNode got = JSON.createArrayNode();
    try (Subscriber sub = client.subscriber(host, port, subAuth)) {
      for (int i = 1; i <= IDLE_MGETS; i++) {
        long start = System.nanoTime();
        List<String> batch;
        try {
          batch = sub.mget();
        } catch (RuntimeException e) {
          long ms = (System.nanoTime() - start) / 1_000_000;
          throw new IllegalStateException(
              "idle MGET " + i + " of " + IDLE_MGETS + " failed after " + ms + " ms: " + e, e);
        }
        if (!batch.isEmpty()) {
          throw new IllegalStateException(
              "idle MGET " + i + " of " + IDLE_MGETS + " returned " + batch.size() + " messages, want none: " + batch);
        }
      }

      client.publish(host, port, pubAuth, n);

      long end = System.currentTimeMillis() + DEADLINE_MS;
      while (got.size() < n) {
        if (System.currentTimeMillis() > end) {
          throw new IllegalStateException("only " + got.size() + " of " + n + " messages after " + DEADLINE_MS + " ms");
        }
        List<String> batch = sub.mget();
        Map<Long, Long> highest = new LinkedHashMap<>();
        for (String raw : batch) {
          JsonNode m = JSON.readTree(raw);
          if (m == null || !m.isObject()) {
            throw new IllegalStateException("MGET element is not a JSON object: " + raw);
          }
          JsonNode p = m.get("partition");
          JsonNode o = m.get("offset");
          if (p == null || !p.canConvertToLong() || o == null || !o.canConvertToLong()) {
            throw new IllegalStateException("MGET element without integer partition and offset: " + raw);
          }
          highest.merge(p.asLong(), o.asLong(), Math::max);
          got.add(m);
        }
        for (Map.Entry<Long, Long> e : highest.entrySet()) {
          try {
            sub.commit(e.getKey(), e.getValue());
          } catch (RuntimeException ex) {
            throw new IllegalStateException("commit SET " + e.getKey() + " " + e.getValue() + ": " + ex, ex);
          }
        }
      }
    }
    return JSON.writeValueAsString(got);
  }

  private static void expectOk(String what, String reply) {
    if (!"OK".equals(reply)) {
      throw new IllegalStateException(what + ": reply '" + reply + "', want OK");
    }
  }

  // -------------------------------------------------------------------------------------------
  // Jedis 8, default options: 2 s socket timeout, RESP2 with AUTH <password> then CLIENT SETINFO.
  // (Each connection logs a WARN on stderr that the Jedis class does not auto-negotiate RESP3.)

  static final class JedisClient implements Client {
    private static Jedis connect(String host, int port, String auth) {
      return new Jedis(new HostAndPort(host, port), DefaultJedisClientConfig.builder().password(auth).build());
    }

    @Override
    public Subscriber subscriber(String host, int port, String auth) {
      Jedis jedis = connect(host, port, auth);
      return new Subscriber() {
        @Override
        public List<String> mget() {
          Object reply = jedis.sendCommand(Protocol.Command.MGET);
          if (!(reply instanceof List)) {
            throw new IllegalStateException("MGET reply is not a list: " + reply);
          }
          List<String> out = new ArrayList<>();
          for (Object item : (List<?>) reply) {
            if (!(item instanceof byte[])) {
              throw new IllegalStateException("MGET element is not a bulk string: " + item);
            }
            out.add(new String((byte[]) item, StandardCharsets.UTF_8));
          }
          return out;
        }

        @Override
        public void commit(long partition, long offset) {
          expectOk("SET " + partition + " " + offset, jedis.set(Long.toString(partition), Long.toString(offset)));
        }

        @Override
        public void close() {
          jedis.close();
        }
      };
    }

    @Override
    public void ping(String host, int port, String auth) {
      try (Jedis jedis = connect(host, port, auth)) {
        jedis.ping();
      }
    }

    @Override
    public void publish(String host, int port, String auth, int n) {
      try (Jedis jedis = connect(host, port, auth)) {
        for (int i = 0; i < n; i++) {
          expectOk("SET k" + i + " v" + i, jedis.set("k" + i, "v" + i));
        }
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Lettuce 7, default options: RESP3 (HELLO 3 AUTH default <password>), 60 s command timeout.

  static final class LettuceClient implements Client {
    private static RedisClient client(String host, int port, String auth) {
      return RedisClient.create(
          RedisURI.builder().withHost(host).withPort(port).withPassword(auth.toCharArray()).build());
    }

    @Override
    public Subscriber subscriber(String host, int port, String auth) {
      RedisClient client = client(host, port, auth);
      StatefulRedisConnection<String, String> conn;
      try {
        conn = client.connect();
      } catch (RuntimeException e) {
        client.shutdown();
        throw e;
      }
      RedisCommands<String, String> sync = conn.sync();
      return new Subscriber() {
        @Override
        public List<String> mget() {
          return sync.dispatch(CommandType.MGET, new ValueListOutput<>(StringCodec.UTF8));
        }

        @Override
        public void commit(long partition, long offset) {
          expectOk("SET " + partition + " " + offset, sync.set(Long.toString(partition), Long.toString(offset)));
        }

        @Override
        public void close() {
          try {
            conn.close();
          } finally {
            client.shutdown();
          }
        }
      };
    }

    @Override
    public void ping(String host, int port, String auth) {
      RedisClient client = client(host, port, auth);
      try (StatefulRedisConnection<String, String> conn = client.connect()) {
        conn.sync().ping();
      } finally {
        client.shutdown();
      }
    }

    @Override
    public void publish(String host, int port, String auth, int n) {
      RedisClient client = client(host, port, auth);
      try (StatefulRedisConnection<String, String> conn = client.connect()) {
        RedisCommands<String, String> sync = conn.sync();
        for (int i = 0; i < n; i++) {
          expectOk("SET k" + i + " v" + i, sync.set("k" + i, "v" + i));
        }
      } finally {
        client.shutdown();
      }
    }
  }
}
