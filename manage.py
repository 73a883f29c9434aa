#!/usr/bin/env python
"""Django's command-line utility; the same as the installed `iflow2api` command."""

from iflow2api_site.cli import main

if __name__ == "__main__":
    main()
