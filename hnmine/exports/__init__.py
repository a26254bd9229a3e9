"""What export writes beside a trainer's file: portable Arrow types, the dataset card, batch plans."""
