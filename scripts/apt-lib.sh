# Sourced by the install scripts: which Debian packages are not installed yet.
#   missing_packages PKG...   prints, one a line, the packages dpkg does not list as installed
missing_packages() {
	local pkg status
	for pkg in "$@"; do
		status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
		[ "$status" = installed ] || printf '%s\n' "$pkg"
	done
}
