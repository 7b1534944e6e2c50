// SPDX-License-Identifier: GPL-2.0
/* A module other modules depend on: exports a symbol, takes two parameters. */
#include <linux/module.h>

static int level = 1;
module_param(level, int, 0444);
MODULE_PARM_DESC(level, "How much to say (0-3)");

static char *tag = "dep";
module_param(tag, charp, 0444);
MODULE_PARM_DESC(tag, "A word to print");

int kmodd_dep_value(void)
{
	return level;
}
EXPORT_SYMBOL_GPL(kmodd_dep_value);

static int __init kmodd_dep_init(void)
{
	pr_info("kmodd_dep: loaded, level %d, tag %s\n", level, tag);
	return 0;
}

static void __exit kmodd_dep_exit(void)
{
}

module_init(kmodd_dep_init);
module_exit(kmodd_dep_exit);
MODULE_LICENSE("GPL");
MODULE_AUTHOR("kmodd tests");
MODULE_DESCRIPTION("kmodd test module: exports kmodd_dep_value");
MODULE_ALIAS("kmodd-test-dep");
