#!/usr/bin/env bash
# Kaldi-style option parsing; source it after defining the defaults:
#
#   stage=0          # every variable defined before sourcing is an option
#   use_gpu=false    # a variable whose value is true/false only accepts true or false
#   . utils/parse_options.sh   # "$@" then holds the positional arguments
#
# Semantics (Kaldi's utils/parse_options.sh):
#   --var-name value   sets var_name (dashes become underscores); the variable must already exist,
#                      else "invalid option" and exit 1. "--name=value" is rejected, as in Kaldi.
#   --config FILE      sources FILE (bash assignments) before any other option, wherever it appears;
#                      the options on the command line then override it.
#   --help | -h        prints $help_message (if set), then the script's option block, and exits 0:
#                      every top-level "name=default  # comment" line from the first one up to
#                      help_message= (or the line sourcing this file), as "--name default  # comment",
#                      and the comment lines among them, so the help is the defaults' own comments.
#   The first argument that does not start with "--" (or a lone "--") ends the options.
# Unlike Kaldi's version, values are assigned with printf -v, never with eval: a value such as
# '$(rm -rf x)' or a path with spaces is stored verbatim and never executed or word-split.
# Stricter than Kaldi's (each mistake below used to run, or run nothing, and exit 0):
#   - an option must name a recipe variable: an environment variable (--PATH, --HOME) or one of
#     bash's own (--IFS, --BASHOPTS) is "invalid option";
#   - stage and stop_stage, when the recipe has them, must be whole numbers, and stage must not
#     come after stop_stage (no stage would run).

__po_die() { echo "$0: $*" >&2; exit 1; }

__po_options_help() {  # $1: the script; its option block as "--name default  # comment" lines
  [ -r "$1" ] || return 0
  echo "Options (default, then what it is; --config FILE sets them from a file):"
  awk '/^help_message=/ || /parse_options\.sh/ { exit }
       /^[A-Za-z_][A-Za-z0-9_]*=/ { on = 1; sub(/=/, " "); print "  --" $0; next }
       on && /^[[:space:]]*#/ { sub(/^[[:space:]]*/, ""); print "  " $0 }' "$1"
}

# Variables bash defines itself (IFS, BASHOPTS, PPID, ...), listed by a clean bash: never options.
__po_bash_vars=" $(env -i "$BASH" --norc --noprofile -c 'compgen -v' 2>/dev/null | tr '\n' ' ') "
__po_not_recipe() {  # $1: a variable name; prints why it is not a recipe variable, if it is not
  local flags
  flags=$(declare -p "$1" 2>/dev/null)
  flags=${flags#declare -}
  flags=${flags%% *}                 # e.g. "-", "x", "rx": the attributes of the variable
  if [[ "$flags" == *x* ]]; then echo "$1 is an environment variable, not an option of $0"; return; fi
  case "$__po_bash_vars" in
    *" $1 "*) echo "$1 is a variable of bash itself, not an option of $0" ;;
  esac
}

# --config first (Kaldi does this too, so options given later always win over the file).
__po_args=("$@")
for ((__po_i = 0; __po_i < ${#__po_args[@]}; __po_i++)); do
  [ "${__po_args[__po_i]}" = "--" ] && break
  if [ "${__po_args[__po_i]}" = "--config" ]; then
    [ $((__po_i + 1)) -lt ${#__po_args[@]} ] || __po_die "option --config needs a value"
    __po_cfg=${__po_args[__po_i + 1]}
    [ -r "$__po_cfg" ] || __po_die "cannot read config file '$__po_cfg'"
    # shellcheck disable=SC1090
    . "$__po_cfg"
  fi
done

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      { [ -z "${help_message:-}" ] || printf '%s\n' "$help_message"; __po_options_help "$0"; } >&2
      exit 0 ;;
    --) shift; break ;;
    --*=*) __po_die "options must be of the form --name value, got '$1'" ;;
    --config) shift 2 ;;  # already sourced above
    --*)
      __po_name=${1#--}
      __po_name=${__po_name//-/_}
      [[ "$__po_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || __po_die "invalid option $1"
      [ -n "${!__po_name+set}" ] || __po_die "invalid option $1"
      __po_why=$(__po_not_recipe "$__po_name")
      [ -z "$__po_why" ] || __po_die "invalid option $1: $__po_why"
      [ $# -ge 2 ] || __po_die "option $1 needs a value"
      __po_old=${!__po_name}
      if [ "$__po_old" = true ] || [ "$__po_old" = false ]; then
        [ "$2" = true ] || [ "$2" = false ] || __po_die "expected \"true\" or \"false\": $1 $2"
      fi
      printf -v "$__po_name" '%s' "$2"
      shift 2 ;;
    *) break ;;
  esac
done

# Stage ranges: numbers, in order (a reversed range used to print shell errors, or nothing, and exit 0).
for __po_name in stage stop_stage; do
  if [ -n "${!__po_name+set}" ] && ! [[ "${!__po_name}" =~ ^-?[0-9]+$ ]]; then
    __po_die "--$__po_name ${!__po_name}: not a stage number"
  fi
done
if [ -n "${stage+set}" ] && [ -n "${stop_stage+set}" ] && [ "$stage" -gt "$stop_stage" ]; then
  __po_die "--stage $stage is after --stop_stage $stop_stage: no stage would run"
fi

unset __po_args __po_i __po_cfg __po_name __po_old __po_why __po_bash_vars
unset -f __po_die __po_not_recipe
true  # a sourced script's status is its last command's
