"""datatrove's tokenization step on a folder of JSONL files (run with the bench venv's python).

Usage: datatrove_tokenize.py INPUT_DIR OUTPUT_DIR TOKENIZER_JSON WORKERS
"""

import sys

if __name__ == "__main__":  # datatrove's workers re-import this script
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer

    input_dir, output_dir, tokenizer, workers = (
        sys.argv[1],
        sys.argv[2],
        sys.argv[3],
        int(sys.argv[4]),
    )
    import glob

    tasks = len(glob.glob(f"{input_dir}/*.jsonl"))
    LocalPipelineExecutor(
        pipeline=[
            JsonlReader(input_dir, glob_pattern="*.jsonl", compression=None),
            DocumentTokenizer(
                output_dir,
                tokenizer_name_or_path=tokenizer,
                shuffle_documents=False,
                save_final_metadata=False,
            ),
        ],
        tasks=tasks,
        workers=workers,
        logging_dir=f"{output_dir}-logs",
    ).run()
