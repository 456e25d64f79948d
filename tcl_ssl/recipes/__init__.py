"""The packaged recipe files (YAML), listed by ``tcl-ssl pretrain --list-recipes``; see
:mod:`tcl_ssl.config.recipes` for their format and loading."""
