// Kafka's own Java producer used the way the grid uses every peer
// (bench/src/grid.rs): `clients` threads share one producer, each sends
// `pipeline` records, waits for their acknowledgements, and repeats, until
// `requests` records are acknowledged. The settings are the bare librdkafka
// producer's: acks=all, idempotent, linger.ms and max.in.flight as given.
//
// Protocol with the bench: prints "ready" once warmed up, waits for a line
// on stdin, runs, then prints one line:
//   result <rps> <p50 ms> <p99 ms> <errors> <cpu seconds of this JVM in the run>
// and keeps its client threads until the next line on stdin, so that the
// bench can count their context switches in /proc before they exit.
//
// scripts/bench.sh compiles it against the Kafka jars of scripts/kafka.sh.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class GridProducer {
    public static void main(String[] args) throws Exception {
        if (args.length != 8) {
            System.err.println(
                "usage: GridProducer BROKERS TOPIC CLIENTS PIPELINE REQUESTS VALUE_SIZE LINGER_MS MAX_IN_FLIGHT");
            System.exit(2);
        }
        String brokers = args[0];
        String topic = args[1];
        int clients = Integer.parseInt(args[2]);
        int pipeline = Integer.parseInt(args[3]);
        int requests = Integer.parseInt(args[4]);
        int valueSize = Integer.parseInt(args[5]);
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.LINGER_MS_CONFIG, args[6]);
        p.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, args[7]);
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "10000");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "9000");
        try (KafkaProducer<byte[], byte[]> producer =
                new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer())) {
            byte[] value = new byte[valueSize];
            Arrays.fill(value, (byte) 'x');
            // Warm-up: metadata, the producer id, the JIT.
            CountDownLatch none = new CountDownLatch(0);
            for (Thread t : run(producer, topic, Math.min(clients, 10), 1, 2000, value, null, none)) {
                t.join();
            }
            System.out.println("ready");
            System.out.flush();
            BufferedReader stdin = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            stdin.readLine();
            com.sun.management.OperatingSystemMXBean os =
                (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
            long cpu0 = os.getProcessCpuTime();
            long[] latencies = new long[requests];
            errors.set(0);
            CountDownLatch release = new CountDownLatch(1);
            long t0 = System.nanoTime();
            List<Thread> threads = run(producer, topic, clients, pipeline, requests, value, latencies, release);
            finished.await();
            double seconds = (System.nanoTime() - t0) / 1e9;
            double cpu = (os.getProcessCpuTime() - cpu0) / 1e9;
            Arrays.sort(latencies);
            System.out.printf("result %.1f %.3f %.3f %d %.3f%n", requests / seconds,
                latencies[Math.max(0, (int) Math.ceil(0.50 * requests) - 1)] / 1e6,
                latencies[Math.max(0, (int) Math.ceil(0.99 * requests) - 1)] / 1e6, errors.get(), cpu);
            System.out.flush();
            stdin.readLine();
            release.countDown();
            for (Thread t : threads) {
                t.join();
            }
        }
    }

    static CountDownLatch finished;
    static final AtomicLong errors = new AtomicLong();

    /// `clients` threads, `pipeline` records at a time each; a record's
    /// latency runs from its batch's first send to the batch's first
    /// acknowledgement (as redis-benchmark counts a pipeline).
    /// Each thread counts down `finished` when its share is acknowledged,
    /// then waits for `release` before it ends.
    static List<Thread> run(KafkaProducer<byte[], byte[]> producer, String topic, int clients, int pipeline,
            int requests, byte[] value, long[] latencies, CountDownLatch release) {
        finished = new CountDownLatch(clients);
        List<Thread> threads = new ArrayList<>();
        for (int c = 0; c < clients; c++) {
            final int first = (int) ((long) requests * c / clients);
            final int end = (int) ((long) requests * (c + 1) / clients);
            final CountDownLatch done = finished;
            Thread t = new Thread(() -> {
                int n = first;
                while (n < end) {
                    int batch = Math.min(pipeline, end - n);
                    CountDownLatch acked = new CountDownLatch(batch);
                    long started = System.nanoTime();
                    for (int i = n; i < n + batch; i++) {
                        final int slot = i;
                        byte[] key = ("k" + (i % 100000)).getBytes(StandardCharsets.UTF_8);
                        RecordHeaders headers = new RecordHeaders();
                        headers.add("color", new byte[0]);
                        producer.send(new ProducerRecord<>(topic, null, key, value, headers), (md, e) -> {
                            if (e != null) {
                                errors.incrementAndGet();
                            }
                            if (latencies != null) {
                                latencies[slot] = System.nanoTime() - started;
                            }
                            acked.countDown();
                        });
                    }
                    try {
                        acked.await();
                    } catch (InterruptedException e) {
                        return;
                    }
                    if (latencies != null) {
                        // As redis-benchmark counts a pipeline: every record
                        // of the batch at the time of its first acknowledgement.
                        long firstAck = Long.MAX_VALUE;
                        for (int i = n; i < n + batch; i++) {
                            firstAck = Math.min(firstAck, latencies[i]);
                        }
                        Arrays.fill(latencies, n, n + batch, firstAck);
                    }
                    n += batch;
                }
                done.countDown();
                try {
                    release.await();
                } catch (InterruptedException e) {
                    // ends now
                }
            });
            t.start();
            threads.add(t);
        }
        return threads;
    }
}
