#pragma once
/* Access log files: the only place access log bytes reach a file descriptor.
 *
 * Workers never write files: msm_al_file_write() appends the line to the file's pending buffer
 * under the file's mutex (a memcpy) and returns. One flusher thread for the whole process
 * writes pending buffers out every --file-flush-interval-msec, or as soon as a buffer holds
 * --file-flush-min-size-kb (Envoy's AccessLogFileImpl and its flush thread). A buffer that
 * grows past MSM_AL_FILE_MAX_PENDING (the disk cannot keep up) drops further lines and counts
 * them (access_log_file.write_dropped) instead of eating memory.
 *
 * Files are shared by path and reference-counted; "/dev/stdout" and "/dev/stderr" use fds 1 and
 * 2 directly. SIGUSR1 (msm_al_files_reopen) makes the flusher close and reopen every file, for
 * logrotate. Stats (Envoy's filesystem.* names): filesystem.write_buffered,
 * filesystem.write_completed, filesystem.write_failed, filesystem.flushed_by_timer,
 * filesystem.reopen_failed, filesystem.write_total_buffered, and
 * access_log_file.write_dropped. */
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define MSM_AL_FILE_MAX_PENDING (64u * 1024 * 1024)

struct msm_al_file;

/* Flush policy (from the command line), before the first file is opened. 0 = Envoy's default
 * (10000 ms, 64 KiB). */
void msm_al_files_configure(uint32_t flush_interval_ms, uint32_t min_flush_kb);
/* Open (or share) the file at <path>, creating it (0644). Main thread, at config time. NULL with
 * <err> when it cannot be opened (Envoy rejects the config then). */
struct msm_al_file *msm_al_file_open(const char *path, struct msm_err *err);
struct msm_al_file *msm_al_file_ref(struct msm_al_file *f);
/* Any thread; the last reference hands the file to the flusher, which writes what is pending
 * and closes it. */
void msm_al_file_unref(struct msm_al_file *f);
/* Any thread: queue <n> bytes. */
void msm_al_file_write(struct msm_al_file *f, const char *data, size_t n);
/* Any thread (signal handlers: the main loop's SIGUSR1 watcher): reopen every file. */
void msm_al_files_reopen(void);
/* Write everything pending now and wait until it is written (tests, shutdown). */
void msm_al_files_flush(void);
/* Process exit: flush, stop the flusher thread, close the files still referenced. */
void msm_al_files_shutdown(void);
