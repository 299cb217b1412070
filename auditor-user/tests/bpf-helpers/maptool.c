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
 */
#define _GNU_SOURCE
#include <linux/bpf.h>
#include <sched.h>
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
	return 64;
}
