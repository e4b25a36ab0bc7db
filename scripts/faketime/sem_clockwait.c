/* libfaketime 0.9.10 (Debian 12) fakes CLOCK_MONOTONIC and sem_timedwait but not sem_clockwait,
 * which Python >= 3.11 uses for every timed lock wait (threading.Event.wait(t), queue.get(timeout=t)).
 * The deadline Python computes on the faked monotonic clock is then read by the kernel on the real
 * one, and the wait never ends: a dagster-daemon stops ticking after its first sensor tick.
 * Loaded before libfaketime, this turns such a wait into the same wait on the (faked) realtime
 * clock, which libfaketime does translate. Used only when the suite runs under faketime
 * (scripts/test.sh builds and preloads it then); nothing in the product needs it. */
#define _GNU_SOURCE
#include <errno.h>
#include <semaphore.h>
#include <time.h>

int sem_clockwait(sem_t *sem, clockid_t clock, const struct timespec *abstime)
{
    struct timespec now_on_clock, now_realtime, deadline;
    long long left_ns;

    if (clock == CLOCK_REALTIME)
        return sem_timedwait(sem, abstime);
    if (clock != CLOCK_MONOTONIC) {
        errno = EINVAL;
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &now_on_clock);
    clock_gettime(CLOCK_REALTIME, &now_realtime);
    left_ns = (long long)(abstime->tv_sec - now_on_clock.tv_sec) * 1000000000LL
              + (abstime->tv_nsec - now_on_clock.tv_nsec);
    if (left_ns < 0)
        left_ns = 0;
    left_ns += now_realtime.tv_nsec;
    deadline.tv_sec = now_realtime.tv_sec + (time_t)(left_ns / 1000000000LL);
    deadline.tv_nsec = (long)(left_ns % 1000000000LL);
    return sem_timedwait(sem, &deadline);
}
