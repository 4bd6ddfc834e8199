/* kdload: memory workloads for the vmharness guest (built with gcc -static on the host).
 *
 *   kdload hog MB random|zero|repeat   fork a child that mallocs MB MiB, touches every page with
 *                                      the pattern and sleeps forever; returns once it is touched
 *   kdload fill FILE MB [SEED]         write MB MiB of incompressible pattern into FILE (page cache)
 *   kdload read FILE                   read FILE to the end (brings it into the page cache)
 *   kdload map FILE                    fork a child that maps FILE shared, reads every page and sleeps
 *   kdload shm MB                      create a SysV shared memory segment and fill it (kept after exit)
 *   kdload files DIR N                 create N small files in DIR (inode and dentry slab objects)
 *
 * Every page written with "random" or "fill" starts with the 8-byte magic "KDPAGE\0\0" followed by
 * the page index, then a xorshift64 stream: dumps can be checked for exact page contents.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE 4096UL
#define MIB (1024UL * 1024UL)

static void die(const char *what)
{
	fprintf(stderr, "kdload: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void fill_page(unsigned char *p, uint64_t index, uint64_t seed)
{
	uint64_t *w = (uint64_t *)p;
	uint64_t x = seed ^ (index * 0x9E3779B97F4A7C15ULL) ^ 0x2545F4914F6CDD1DULL;
	memcpy(w, "KDPAGE\0\0", 8);
	w[1] = index;
	for (size_t i = 2; i < PAGE / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w[i] = x;
	}
}

static void touch(unsigned char *buf, size_t bytes, const char *pattern, uint64_t seed)
{
	for (size_t off = 0; off < bytes; off += PAGE) {
		if (!strcmp(pattern, "zero"))
			memset(buf + off, 0, PAGE);
		else if (!strcmp(pattern, "repeat"))
			memset(buf + off, 0x5a, PAGE);
		else
			fill_page(buf + off, off / PAGE, seed);
	}
}

static int hog(size_t mib, const char *pattern)
{
	int fds[2];
	char c = 0;
	if (pipe(fds))
		die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(fds[0]);
		size_t bytes = mib * MIB;
		unsigned char *buf = malloc(bytes);
		if (!buf)
			die("malloc");
		touch(buf, bytes, pattern, (uint64_t)getpid());
		if (write(fds[1], "r", 1) != 1)
			die("write");
		close(fds[1]);
		for (;;)
			pause();
	}
	close(fds[1]);
	if (read(fds[0], &c, 1) != 1) {
		fprintf(stderr, "kdload: hog child failed\n");
		return 1;
	}
	printf("kdload: hog %zu MiB %s pid %d\n", mib, pattern, (int)pid);
	return 0;
}

static int fill(const char *path, size_t mib, uint64_t seed)
{
	static unsigned char chunk[256 * PAGE];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die(path);
	uint64_t index = 0;
	for (size_t done = 0; done < mib * MIB; done += sizeof(chunk)) {
		for (size_t off = 0; off < sizeof(chunk); off += PAGE)
			fill_page(chunk + off, index++, seed);
		if (write(fd, chunk, sizeof(chunk)) != (ssize_t)sizeof(chunk))
			die("write");
	}
	close(fd);
	return 0;
}

static int readall(const char *path)
{
	static unsigned char chunk[256 * PAGE];
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		die(path);
	ssize_t n;
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		;
	if (n < 0)
		die("read");
	close(fd);
	return 0;
}

static int map(const char *path)
{
	int fds[2];
	char c = 0;
	if (pipe(fds))
		die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(fds[0]);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			die(path);
		struct stat st;
		if (fstat(fd, &st))
			die("fstat");
		volatile unsigned char *p = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			die("mmap");
		unsigned long sum = 0;
		for (off_t off = 0; off < st.st_size; off += PAGE)
			sum += p[off];
		if (write(fds[1], "r", 1) != 1)
			die("write");
		close(fds[1]);
		for (;;)
			pause();
	}
	close(fds[1]);
	if (read(fds[0], &c, 1) != 1) {
		fprintf(stderr, "kdload: map child failed\n");
		return 1;
	}
	printf("kdload: map %s pid %d\n", path, (int)pid);
	return 0;
}

static int shm(size_t mib)
{
	size_t bytes = mib * MIB;
	int id = shmget(IPC_PRIVATE, bytes, IPC_CREAT | 0600);
	if (id < 0)
		die("shmget");
	unsigned char *p = shmat(id, NULL, 0);
	if (p == (void *)-1)
		die("shmat");
	touch(p, bytes, "random", 0x5348ULL);
	shmdt(p);
	printf("kdload: shm %zu MiB id %d\n", mib, id);
	return 0;
}

static int files(const char *dir, long n)
{
	char path[4096];
	if (mkdir(dir, 0755) && errno != EEXIST)
		die(dir);
	for (long i = 0; i < n; i++) {
		if (i % 100 == 0) {
			snprintf(path, sizeof(path), "%s/d%ld", dir, i / 100);
			if (mkdir(path, 0755) && errno != EEXIST)
				die(path);
		}
		snprintf(path, sizeof(path), "%s/d%ld/f%ld", dir, i / 100, i);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0)
			die(path);
		if (write(fd, path, strlen(path)) < 0)
			die("write");
		close(fd);
	}
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc >= 4 && !strcmp(argv[1], "hog"))
		return hog(strtoul(argv[2], NULL, 0), argv[3]);
	if (argc >= 4 && !strcmp(argv[1], "fill"))
		return fill(argv[2], strtoul(argv[3], NULL, 0),
			    argc > 4 ? strtoull(argv[4], NULL, 0) : 1);
	if (argc == 3 && !strcmp(argv[1], "read"))
		return readall(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "map"))
		return map(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "shm"))
		return shm(strtoul(argv[2], NULL, 0));
	if (argc == 4 && !strcmp(argv[1], "files"))
		return files(argv[2], strtol(argv[3], NULL, 0));
	fprintf(stderr, "usage: kdload hog MB random|zero|repeat | fill FILE MB [SEED] | read FILE"
			" | map FILE | shm MB | files DIR N\n");
	return 2;
}
