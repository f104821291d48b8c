#!/usr/bin/env perl
# Usage: utils/spk2utt_to_utt2spk.pl [spk2utt] > utt2spk   (Kaldi's converter; pipe through
# `LC_ALL=C sort` if the speakers' utterances interleave).
use strict;
use warnings;
while (my $line = <>) {
  my ($spk, @utts) = split(' ', $line);
  (defined $spk && @utts) or die "spk2utt_to_utt2spk.pl: $ARGV:$.: malformed line: $line";
  print "$_ $spk\n" for @utts;
}
