/* The container side of benches/network.rs, built static by the bench (busybox images have
 * no iperf3).
 *
 *   netbench serve PORT          one connection at a time; the first byte says what to do:
 *                                'S' sink: read to EOF, answer the byte count (8 bytes, LE)
 *                                'G' + 8 bytes N (LE): send N bytes, close
 *                                'P' ping: answer one byte, close
 *   netbench send IP PORT BYTES  connect and send BYTES, then wait for the peer to close
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char buf[1 << 20];

static int read_full(int fd, void *p, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r <= 0) return -1;
        got += r;
    }
    return 0;
}

static int write_full(int fd, const void *p, size_t n) {
    size_t put = 0;
    while (put < n) {
        ssize_t w = write(fd, (const char *)p + put, n - put);
        if (w <= 0) return -1;
        put += w;
    }
    return 0;
}

static void serve_one(int c) {
    char cmd;
    if (read_full(c, &cmd, 1)) return;
    if (cmd == 'S') {
        uint64_t total = 0;
        ssize_t r;
        while ((r = read(c, buf, sizeof buf)) > 0) total += r;
        write_full(c, &total, 8);
    } else if (cmd == 'G') {
        uint64_t n;
        if (read_full(c, &n, 8)) return;
        while (n > 0) {
            size_t k = n < sizeof buf ? n : sizeof buf;
            if (write_full(c, buf, k)) return;
            n -= k;
        }
    } else if (cmd == 'P') {
        write_full(c, "p", 1);
    }
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "serve")) {
        int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        a.sin_port = htons(atoi(argv[2]));
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 128)) {
            perror("listen");
            return 1;
        }
        printf("serving\n");
        fflush(stdout);
        for (;;) {
            int c = accept(s, NULL, NULL);
            if (c < 0) continue;
            setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            serve_one(c);
            close(c);
        }
    }
    if (argc == 5 && !strcmp(argv[1], "send")) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        a.sin_port = htons(atoi(argv[3]));
        inet_pton(AF_INET, argv[2], &a.sin_addr);
        if (connect(s, (struct sockaddr *)&a, sizeof a)) {
            perror("connect");
            return 1;
        }
        uint64_t n = strtoull(argv[4], NULL, 10);
        while (n > 0) {
            size_t k = n < sizeof buf ? n : sizeof buf;
            if (write_full(s, buf, k)) return 1;
            n -= k;
        }
        shutdown(s, SHUT_WR);
        while (read(s, buf, sizeof buf) > 0) {
        }
        return 0;
    }
    fprintf(stderr, "usage: netbench serve PORT | netbench send IP PORT BYTES\n");
    return 2;
}
