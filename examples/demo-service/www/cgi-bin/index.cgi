#!/bin/sh
# GET / (busybox httpd runs /cgi-bin/index.cgi for a folder without index.html)
exec /www/cgi-bin/greet
