/* Test helper for tests/bpf_audit.rs: bpf(2) calls bpftool cannot make
 * (batches, bad fds, bad flags) and two processes writing one map at once.
 *
 *   maptool create NAME PIN      create a hash map (key 4, value 4, 64
 *                                entries), update key 1 itself, pin it,
 *                                print its id
 *   maptool race PIN N           open PIN, fork; parent and child each do
 *                                N updates, each pinned to its own CPU;
 *                                print both pids
 *   maptool badfd                update on fd 1000 (EBADF)
 *   maptool badflags PIN         update with flags 99 (EINVAL)
 *   maptool batch PIN            update 5 elements in one batch
 *   maptool unresolved           update on a pipe (EINVAL), on fd -1
 *                                (EBADF), and with a NULL attr (EFAULT)
 *   maptool compat PIN           update key 3 through the 32-bit entry
 *                                (int $0x80, i386 bpf = 357)
 *   maptool mmapcreate NAME PIN  create a BPF_F_MMAPABLE array, pin it,
 *                                print its id
 *   maptool mmapwrite PIN        map PIN shared and writable, write to it
 *   maptool prog PIN MODE        load a socket filter that updates the map
 *                                (MODE fd: map fd in the instruction; idx:
 *                                through fd_array), test-run it, print
 *                                the program's id
 *   maptool link PIN CGROUP      load a cgroup_skb program that updates the
 *                                map and link it to the CGROUP directory
 *   maptool attach PIN CGROUP    the same program attached with
 *                                BPF_PROG_ATTACH, then detached; prints
 *                                its id
 *   maptool linkupdate PIN CGROUP link a program that touches no map to
 *                                CGROUP, then BPF_LINK_UPDATE it to one
 *                                that updates the map; prints that id
 *   maptool rawtp PIN            a raw tracepoint program that updates the
 *                                map, opened on task_rename; prints its id
 *   maptool lookups PIN N [RATE] N lookups (benchmark load), at most RATE
 *                                per second when given; prints ns per call
 */
#define _GNU_SOURCE
#include <linux/bpf.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static long sys_bpf(int cmd, union bpf_attr *attr, unsigned int size)
{
	return syscall(SYS_bpf, cmd, attr, size);
}

static int obj_get(const char *path)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.pathname = (unsigned long)path;
	int fd = sys_bpf(BPF_OBJ_GET, &a, sizeof(a));
	if (fd < 0) {
		perror("BPF_OBJ_GET");
		exit(2);
	}
	return fd;
}

static long update(int fd, unsigned int key, unsigned int value, unsigned long flags)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_fd = fd;
	a.key = (unsigned long)&key;
	a.value = (unsigned long)&value;
	a.flags = flags;
	return sys_bpf(BPF_MAP_UPDATE_ELEM, &a, sizeof(a));
}

/* ld_imm64 of a map (src PSEUDO), key/value on the stack, update, exit 1. */
static int load_updater(int map_fd, int by_index, int type, int attach_type)
{
	struct bpf_insn insns[] = {
		{.code = BPF_ST | BPF_MEM | BPF_W, .dst_reg = BPF_REG_10, .off = -4, .imm = 7},
		{.code = BPF_ST | BPF_MEM | BPF_W, .dst_reg = BPF_REG_10, .off = -8, .imm = 9},
		{.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = BPF_REG_1,
		 .src_reg = by_index ? BPF_PSEUDO_MAP_IDX : BPF_PSEUDO_MAP_FD,
		 .imm = by_index ? 0 : map_fd},
		{0},
		{.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = BPF_REG_2, .src_reg = BPF_REG_10},
		{.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = BPF_REG_2, .imm = -4},
		{.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = BPF_REG_3, .src_reg = BPF_REG_10},
		{.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = BPF_REG_3, .imm = -8},
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_4, .imm = 0},
		{.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_map_update_elem},
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 1},
		{.code = BPF_JMP | BPF_EXIT},
	};
	int fds[1] = {map_fd};
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.prog_type = type;
	a.expected_attach_type = attach_type;
	a.insns = (unsigned long)insns;
	a.insn_cnt = sizeof(insns) / sizeof(insns[0]);
	a.license = (unsigned long)"GPL";
	if (by_index)
		a.fd_array = (unsigned long)fds;
	int fd = sys_bpf(BPF_PROG_LOAD, &a, sizeof(a));
	if (fd < 0) {
		perror("BPF_PROG_LOAD");
		exit(2);
	}
	return fd;
}

/* r0 = 1; exit: a cgroup_skb program that lets everything through. */
static int load_pass(int type, int attach_type)
{
	struct bpf_insn insns[] = {
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 1},
		{.code = BPF_JMP | BPF_EXIT},
	};
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.prog_type = type;
	a.expected_attach_type = attach_type;
	a.insns = (unsigned long)insns;
	a.insn_cnt = 2;
	a.license = (unsigned long)"GPL";
	int fd = sys_bpf(BPF_PROG_LOAD, &a, sizeof(a));
	if (fd < 0) {
		perror("BPF_PROG_LOAD");
		exit(2);
	}
	return fd;
}

static int open_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY);
	if (fd < 0) {
		perror(path);
		exit(2);
	}
	return fd;
}

static unsigned int prog_id(int fd)
{
	struct bpf_prog_info info;
	union bpf_attr a;
	memset(&info, 0, sizeof(info));
	memset(&a, 0, sizeof(a));
	a.info.bpf_fd = fd;
	a.info.info_len = sizeof(info);
	a.info.info = (unsigned long)&info;
	if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a, sizeof(a)) < 0) {
		perror("BPF_OBJ_GET_INFO_BY_FD");
		exit(2);
	}
	return info.id;
}

static unsigned int map_id(int fd)
{
	struct bpf_map_info info;
	union bpf_attr a;
	memset(&info, 0, sizeof(info));
	memset(&a, 0, sizeof(a));
	a.info.bpf_fd = fd;
	a.info.info_len = sizeof(info);
	a.info.info = (unsigned long)&info;
	if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a, sizeof(a)) < 0) {
		perror("BPF_OBJ_GET_INFO_BY_FD");
		exit(2);
	}
	return info.id;
}

static void pin(int fd, const char *path)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.pathname = (unsigned long)path;
	a.bpf_fd = fd;
	if (sys_bpf(BPF_OBJ_PIN, &a, sizeof(a)) < 0) {
		perror("BPF_OBJ_PIN");
		exit(2);
	}
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 64;
	if (!strcmp(argv[1], "create") && argc == 4) {
		union bpf_attr a;
		memset(&a, 0, sizeof(a));
		a.map_type = BPF_MAP_TYPE_HASH;
		a.key_size = 4;
		a.value_size = 4;
		a.max_entries = 64;
		strncpy(a.map_name, argv[2], sizeof(a.map_name) - 1);
		int fd = sys_bpf(BPF_MAP_CREATE, &a, sizeof(a));
		if (fd < 0) {
			perror("BPF_MAP_CREATE");
			return 2;
		}
		if (update(fd, 1, 1, BPF_ANY) < 0) {
			perror("update");
			return 2;
		}
		memset(&a, 0, sizeof(a));
		a.pathname = (unsigned long)argv[3];
		a.bpf_fd = fd;
		if (sys_bpf(BPF_OBJ_PIN, &a, sizeof(a)) < 0) {
			perror("BPF_OBJ_PIN");
			return 2;
		}
		struct bpf_map_info info;
		memset(&info, 0, sizeof(info));
		memset(&a, 0, sizeof(a));
		a.info.bpf_fd = fd;
		a.info.info_len = sizeof(info);
		a.info.info = (unsigned long)&info;
		if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a, sizeof(a)) < 0) {
			perror("BPF_OBJ_GET_INFO_BY_FD");
			return 2;
		}
		printf("%u\n", info.id);
		return 0;
	}
	if (!strcmp(argv[1], "race") && argc == 4) {
		int fd = obj_get(argv[2]);
		int n = atoi(argv[3]);
		pid_t child = fork();
		/* One writer per CPU: on a shared CPU the two would only take
		 * turns and their calls would never overlap. */
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(child == 0 ? 1 : 0, &set);
		sched_setaffinity(0, sizeof(set), &set);
		for (int i = 0; i < n; i++)
			update(fd, i % 64, i, BPF_ANY);
		if (child == 0)
			return 0;
		waitpid(child, NULL, 0);
		printf("%d %d\n", getpid(), child);
		return 0;
	}
	if (!strcmp(argv[1], "badfd")) {
		long r = update(1000, 1, 1, BPF_ANY);
		return r < 0 ? 0 : 1;
	}
	if (!strcmp(argv[1], "badflags") && argc == 3) {
		long r = update(obj_get(argv[2]), 1, 1, 99);
		return r < 0 ? 0 : 1;
	}
	if (!strcmp(argv[1], "batch") && argc == 3) {
		unsigned int keys[5] = {10, 11, 12, 13, 14};
		unsigned int values[5] = {1, 2, 3, 4, 5};
		union bpf_attr a;
		memset(&a, 0, sizeof(a));
		a.batch.map_fd = obj_get(argv[2]);
		a.batch.keys = (unsigned long)keys;
		a.batch.values = (unsigned long)values;
		a.batch.count = 5;
		if (sys_bpf(BPF_MAP_UPDATE_BATCH, &a, sizeof(a)) < 0) {
			perror("BPF_MAP_UPDATE_BATCH");
			return 2;
		}
		return 0;
	}
	if (!strcmp(argv[1], "unresolved")) {
		int p[2];
		if (pipe(p) < 0)
			return 2;
		long r1 = update(p[0], 1, 1, BPF_ANY);
		long r2 = update(-1, 1, 1, BPF_ANY);
		long r3 = syscall(SYS_bpf, BPF_MAP_UPDATE_ELEM, NULL, 32);
		return r1 < 0 && r2 < 0 && r3 < 0 ? 0 : 1;
	}
	if (!strcmp(argv[1], "compat") && argc == 3) {
		int fd = obj_get(argv[2]);
		/* int $0x80 passes 32-bit registers: everything below 4 GiB. */
		char *low = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
		if (low == MAP_FAILED)
			return 2;
		union bpf_attr *a = (union bpf_attr *)low;
		uint32_t *key = (uint32_t *)(low + 512), *value = key + 1;
		*key = 3;
		*value = 33;
		a->map_fd = fd;
		a->key = (unsigned long)key;
		a->value = (unsigned long)value;
		a->flags = BPF_ANY;
		long r;
		__asm__ volatile("int $0x80"
				 : "=a"(r)
				 : "a"(357), "b"(BPF_MAP_UPDATE_ELEM), "c"((uint32_t)(uintptr_t)a),
				   "d"(sizeof(*a))
				 : "memory");
		if (r < 0) {
			fprintf(stderr, "int $0x80 bpf: %ld\n", r);
			return 2;
		}
		return 0;
	}
	if (!strcmp(argv[1], "mmapcreate") && argc == 4) {
		union bpf_attr a;
		memset(&a, 0, sizeof(a));
		a.map_type = BPF_MAP_TYPE_ARRAY;
		a.key_size = 4;
		a.value_size = 8;
		a.max_entries = 512;
		a.map_flags = BPF_F_MMAPABLE;
		strncpy(a.map_name, argv[2], sizeof(a.map_name) - 1);
		int fd = sys_bpf(BPF_MAP_CREATE, &a, sizeof(a));
		if (fd < 0) {
			perror("BPF_MAP_CREATE");
			return 2;
		}
		pin(fd, argv[3]);
		printf("%u\n", map_id(fd));
		return 0;
	}
	if (!strcmp(argv[1], "mmapwrite") && argc == 3) {
		int fd = obj_get(argv[2]);
		volatile uint64_t *v = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (v == MAP_FAILED) {
			perror("mmap");
			return 2;
		}
		v[5] = 0xdead;
		return 0;
	}
	if (!strcmp(argv[1], "prog") && argc == 4) {
		int map = obj_get(argv[2]);
		int prog = load_updater(map, !strcmp(argv[3], "idx"), BPF_PROG_TYPE_SOCKET_FILTER, 0);
		close(map);
		char data[64] = {0};
		union bpf_attr a;
		memset(&a, 0, sizeof(a));
		a.test.prog_fd = prog;
		a.test.data_in = (unsigned long)data;
		a.test.data_size_in = sizeof(data);
		if (sys_bpf(BPF_PROG_TEST_RUN, &a, sizeof(a)) < 0) {
			perror("BPF_PROG_TEST_RUN");
			return 2;
		}
		printf("%u\n", prog_id(prog));
		return 0;
	}
	if (!strcmp(argv[1], "link") && argc == 4) {
		int map = obj_get(argv[2]);
		int prog = load_updater(map, 0, BPF_PROG_TYPE_CGROUP_SKB, BPF_CGROUP_INET_EGRESS);
		close(map);
		int cg = open(argv[3], O_RDONLY | O_DIRECTORY);
		if (cg < 0) {
			perror(argv[3]);
			return 2;
		}
		union bpf_attr a;
		memset(&a, 0, sizeof(a));
		a.link_create.prog_fd = prog;
		a.link_create.target_fd = cg;
		a.link_create.attach_type = BPF_CGROUP_INET_EGRESS;
		if (sys_bpf(BPF_LINK_CREATE, &a, sizeof(a)) < 0) {
			perror("BPF_LINK_CREATE");
			return 2;
		}
		printf("%u\n", prog_id(prog));
		return 0;
	}
	if (!strcmp(argv[1], "attach") && argc == 4) {
		int map = obj_get(argv[2]);
		int prog = load_updater(map, 0, BPF_PROG_TYPE_CGROUP_SKB, BPF_CGROUP_INET_EGRESS);
		close(map);
		int cg = open_dir(argv[3]);
		union bpf_attr a;
		memset(&a, 0, sizeof(a));
		a.target_fd = cg;
		a.attach_bpf_fd = prog;
		a.attach_type = BPF_CGROUP_INET_EGRESS;
		if (sys_bpf(BPF_PROG_ATTACH, &a, sizeof(a)) < 0) {
			perror("BPF_PROG_ATTACH");
			return 2;
		}
		/* An attachment outlives the process: take it away again. */
		if (sys_bpf(BPF_PROG_DETACH, &a, sizeof(a)) < 0) {
			perror("BPF_PROG_DETACH");
			return 2;
		}
		printf("%u\n", prog_id(prog));
		return 0;
	}
	if (!strcmp(argv[1], "linkupdate") && argc == 4) {
		int pass = load_pass(BPF_PROG_TYPE_CGROUP_SKB, BPF_CGROUP_INET_EGRESS);
		int cg = open_dir(argv[3]);
		union bpf_attr a;
		memset(&a, 0, sizeof(a));
		a.link_create.prog_fd = pass;
		a.link_create.target_fd = cg;
		a.link_create.attach_type = BPF_CGROUP_INET_EGRESS;
		int link = sys_bpf(BPF_LINK_CREATE, &a, sizeof(a));
		if (link < 0) {
			perror("BPF_LINK_CREATE");
			return 2;
		}
		int map = obj_get(argv[2]);
		int prog = load_updater(map, 0, BPF_PROG_TYPE_CGROUP_SKB, BPF_CGROUP_INET_EGRESS);
		close(map);
		memset(&a, 0, sizeof(a));
		a.link_update.link_fd = link;
		a.link_update.new_prog_fd = prog;
		if (sys_bpf(BPF_LINK_UPDATE, &a, sizeof(a)) < 0) {
			perror("BPF_LINK_UPDATE");
			return 2;
		}
		printf("%u\n", prog_id(prog));
		return 0;
	}
	if (!strcmp(argv[1], "rawtp") && argc == 3) {
		int map = obj_get(argv[2]);
		int prog = load_updater(map, 0, BPF_PROG_TYPE_RAW_TRACEPOINT, 0);
		close(map);
		union bpf_attr a;
		memset(&a, 0, sizeof(a));
		a.raw_tracepoint.name = (unsigned long)"task_rename";
		a.raw_tracepoint.prog_fd = prog;
		if (sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &a, sizeof(a)) < 0) {
			perror("BPF_RAW_TRACEPOINT_OPEN");
			return 2;
		}
		printf("%u\n", prog_id(prog));
		return 0;
	}
	if (!strcmp(argv[1], "lookups") && (argc == 4 || argc == 5)) {
		int fd = obj_get(argv[2]);
		long n = atol(argv[3]);
		long rate = argc == 5 ? atol(argv[4]) : 0;
		unsigned int key = 1, value;
		union bpf_attr a;
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (long i = 0; i < n; i++) {
			memset(&a, 0, sizeof(a));
			a.map_fd = fd;
			a.key = (unsigned long)&key;
			a.value = (unsigned long)&value;
			sys_bpf(BPF_MAP_LOOKUP_ELEM, &a, sizeof(a));
			if (rate > 0 && i % 1000 == 999) {
				/* Sleep until call i+1 is due. */
				double due = (double)(i + 1) / rate;
				struct timespec now;
				clock_gettime(CLOCK_MONOTONIC, &now);
				double at = (now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9;
				if (due > at) {
					struct timespec d = {(time_t)(due - at), (long)((due - at - (time_t)(due - at)) * 1e9)};
					nanosleep(&d, NULL);
				}
			}
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
		printf("%.1f\n", ns / n);
		return 0;
	}
	return 64;
}
