// SPDX-License-Identifier: GPL-2.0
/*
 * kdumper_crash: crash the kernel on request, for the vmharness.
 *
 * Writing one of "null", "bug", "warn", "softlockup" or "panic" to /proc/kdumper_crash
 * makes the kernel oops, hit BUG(), WARN() (panics with panic_on_warn=1), spin with preemption
 * disabled (a soft lockup; panics with softlockup_panic=1) or call panic().
 */
#include <linux/bug.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/preempt.h>
#include <linux/proc_fs.h>
#include <linux/string.h>
#include <linux/uaccess.h>

static int *kdumper_null_pointer;

static noinline void kdumper_crash_null(void)
{
	int *p = READ_ONCE(kdumper_null_pointer);

	pr_emerg("kdumper_crash: dereferencing a NULL pointer\n");
	WRITE_ONCE(*p, 0x4b44);
}

static noinline void kdumper_crash_bug(void)
{
	pr_emerg("kdumper_crash: calling BUG()\n");
	BUG();
}

static noinline void kdumper_crash_warn(void)
{
	WARN(1, "kdumper_crash: WARN() requested\n");
}

static noinline void kdumper_crash_softlockup(void)
{
	pr_emerg("kdumper_crash: spinning with preemption disabled\n");
	preempt_disable();
	for (;;)
		cpu_relax();
}

static noinline void kdumper_crash_panic(void)
{
	panic("kdumper_crash: panic requested");
}

static ssize_t kdumper_crash_write(struct file *file, const char __user *ubuf, size_t count,
				   loff_t *ppos)
{
	char buf[32];
	size_t n = min(count, sizeof(buf) - 1);

	if (copy_from_user(buf, ubuf, n))
		return -EFAULT;
	buf[n] = '\0';
	strim(buf);
	if (!strcmp(buf, "null"))
		kdumper_crash_null();
	else if (!strcmp(buf, "bug"))
		kdumper_crash_bug();
	else if (!strcmp(buf, "warn"))
		kdumper_crash_warn();
	else if (!strcmp(buf, "softlockup"))
		kdumper_crash_softlockup();
	else if (!strcmp(buf, "panic"))
		kdumper_crash_panic();
	else
		return -EINVAL;
	return count;
}

static const struct proc_ops kdumper_crash_ops = {
	.proc_write = kdumper_crash_write,
};

static int __init kdumper_crash_init(void)
{
	if (!proc_create("kdumper_crash", 0200, NULL, &kdumper_crash_ops))
		return -ENOMEM;
	return 0;
}

static void __exit kdumper_crash_exit(void)
{
	remove_proc_entry("kdumper_crash", NULL);
}

module_init(kdumper_crash_init);
module_exit(kdumper_crash_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdumper vmharness: crash the kernel on request");
