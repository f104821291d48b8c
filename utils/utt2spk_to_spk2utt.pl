#!/usr/bin/env perl
# Usage: utils/utt2spk_to_spk2utt.pl [utt2spk] > spk2utt
# Kaldi's converter: one line per speaker, utterances in the order they appear in utt2spk,
# speakers in order of first appearance (sorted input gives sorted output).
use strict;
use warnings;
my (%spk2utt, @spks);
while (my $line = <>) {
  my @f = split(' ', $line);
  @f == 2 or die "utt2spk_to_spk2utt.pl: $ARGV:$.: malformed line (expected 2 fields): $line";
  my ($utt, $spk) = @f;
  push(@spks, $spk) unless exists $spk2utt{$spk};
  push(@{$spk2utt{$spk}}, $utt);
}
print join(' ', $_, @{$spk2utt{$_}}), "\n" for @spks;
