//! Stable names for bpf(2) commands, BPF map types and errno values, as
//! they appear in text and JSON output.

use auditor_common::bpf_syscall::cmd;

/// Lower-case command name without the `BPF_` prefix (`map_update_elem`).
/// Unknown numbers render as `cmd_<n>`.
pub fn cmd_name(c: u32) -> String {
    let s = match c {
        cmd::MAP_CREATE => "map_create",
        cmd::MAP_LOOKUP_ELEM => "map_lookup_elem",
        cmd::MAP_UPDATE_ELEM => "map_update_elem",
        cmd::MAP_DELETE_ELEM => "map_delete_elem",
        cmd::MAP_GET_NEXT_KEY => "map_get_next_key",
        cmd::PROG_LOAD => "prog_load",
        cmd::PROG_ATTACH => "prog_attach",
        cmd::PROG_TEST_RUN => "prog_test_run",
        cmd::RAW_TRACEPOINT_OPEN => "raw_tracepoint_open",
        cmd::LINK_CREATE => "link_create",
        cmd::LINK_UPDATE => "link_update",
        cmd::MMAP => "mmap",
        cmd::OBJ_PIN => "obj_pin",
        cmd::OBJ_GET => "obj_get",
        cmd::MAP_GET_NEXT_ID => "map_get_next_id",
        cmd::MAP_GET_FD_BY_ID => "map_get_fd_by_id",
        cmd::OBJ_GET_INFO_BY_FD => "obj_get_info_by_fd",
        cmd::MAP_LOOKUP_AND_DELETE_ELEM => "map_lookup_and_delete_elem",
        cmd::MAP_FREEZE => "map_freeze",
        cmd::MAP_LOOKUP_BATCH => "map_lookup_batch",
        cmd::MAP_LOOKUP_AND_DELETE_BATCH => "map_lookup_and_delete_batch",
        cmd::MAP_UPDATE_BATCH => "map_update_batch",
        cmd::MAP_DELETE_BATCH => "map_delete_batch",
        other => return format!("cmd_{other}"),
    };
    s.to_string()
}

/// Lower-case map type name without `BPF_MAP_TYPE_` (`hash`, `ringbuf`).
pub fn map_type_name(t: u32) -> String {
    const NAMES: [&str; 34] = [
        "unspec",
        "hash",
        "array",
        "prog_array",
        "perf_event_array",
        "percpu_hash",
        "percpu_array",
        "stack_trace",
        "cgroup_array",
        "lru_hash",
        "lru_percpu_hash",
        "lpm_trie",
        "array_of_maps",
        "hash_of_maps",
        "devmap",
        "sockmap",
        "cpumap",
        "xskmap",
        "sockhash",
        "cgroup_storage",
        "reuseport_sockarray",
        "percpu_cgroup_storage",
        "queue",
        "stack",
        "sk_storage",
        "devmap_hash",
        "struct_ops",
        "ringbuf",
        "inode_storage",
        "task_storage",
        "bloom_filter",
        "user_ringbuf",
        "cgrp_storage",
        "arena",
    ];
    NAMES
        .get(t as usize)
        .map_or_else(|| format!("type_{t}"), |s| (*s).to_string())
}

/// Symbolic name of an errno value (`EBADF`); unknown ones as `E<n>`.
pub fn errno_name(e: i32) -> String {
    let s = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ELOOP => "ELOOP",
        libc::ENOTSUP => "EOPNOTSUPP",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EOVERFLOW => "EOVERFLOW",
        // Kernel-internal, leaks to userspace from some map ops.
        524 => "ENOTSUPP",
        other => return format!("E{other}"),
    };
    s.to_string()
}

/// `ok` for a non-negative return, the errno name otherwise.
pub fn result_name(ret: i64) -> String {
    if ret >= 0 {
        "ok".into()
    } else {
        // A return below -i32::MAX is no errno (and -i64::MIN overflows).
        errno_name(i32::try_from(ret.unsigned_abs()).unwrap_or(i32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_are_lower_case_without_prefix() {
        assert_eq!(cmd_name(cmd::MAP_UPDATE_ELEM), "map_update_elem");
        assert_eq!(
            cmd_name(cmd::MAP_LOOKUP_AND_DELETE_BATCH),
            "map_lookup_and_delete_batch"
        );
        assert_eq!(cmd_name(cmd::OBJ_GET_INFO_BY_FD), "obj_get_info_by_fd");
        assert_eq!(cmd_name(99), "cmd_99");
    }

    #[test]
    fn every_audited_command_has_a_name() {
        for c in 0..64 {
            if cmd::audited(c) {
                assert!(!cmd_name(c).starts_with("cmd_"), "command {c}");
            }
        }
    }

    #[test]
    fn errno_names_match_libc() {
        assert_eq!(result_name(-(libc::EBADF as i64)), "EBADF");
        assert_eq!(result_name(-(libc::EINVAL as i64)), "EINVAL");
        assert_eq!(result_name(-(libc::ENOENT as i64)), "ENOENT");
        assert_eq!(result_name(3), "ok");
        assert_eq!(result_name(-4095), "E4095");
    }

    #[test]
    fn any_negative_return_has_a_name_not_a_panic() {
        // Found by fuzzing: ret = i64::MIN from a ring-buffer record.
        assert_eq!(result_name(-i64::from(libc::EBADF)), "EBADF");
        assert_ne!(result_name(i64::MIN), "ok");
    }

    #[test]
    fn map_types_follow_the_uapi_enum() {
        assert_eq!(map_type_name(1), "hash");
        assert_eq!(map_type_name(27), "ringbuf");
        assert_eq!(map_type_name(33), "arena");
        assert_eq!(map_type_name(200), "type_200");
    }
}
