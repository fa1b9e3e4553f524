using System.Buffers;

namespace Quantization;

/// <summary>
/// One cache's attention for the query rows of one KV head: <see cref="KvCacheAttention"/> gathers the rows, the cache
/// scores them against its keys and sums its values.
/// </summary>
internal interface IHeadAttention
{
    /// <summary>
    /// Attends <paramref name="tokens"/> query tokens' rows of one KV head (<see cref="AttentionWorkspace.Rows"/>,
    /// [tokens, group, head dim]) into <see cref="AttentionWorkspace.Output"/>; token t sees the first
    /// <c>before + t + 1</c> tokens of the layer.
    /// </summary>
    void AttendHead(int head, int before, int tokens, AttentionWorkspace workspace);
}

/// <summary>
/// The driver that both caches' attention shares: causal blocks of query tokens in chunks, KV heads split across
/// threads, each thread with its own workspace. Every KV head is computed by the same code on the same data whatever
/// the thread count, and the kernels do not depend on where their buffers lie, so the bits do not change with threads.
/// </summary>
internal static class KvCacheAttention
{
    /// <summary>
    /// The query tokens attended at once: their rows share one pass over the keys and values, and their scores
    /// (rows x layer tokens floats) stay a bounded workspace however long the prompt.
    /// </summary>
    public const int ChunkTokens = 32;

    public static void Run<T>(KvCacheOptions options, int count, int tokens, int threads, ReadOnlySpan<float> queries, Span<float> output, T attention)
        where T : IHeadAttention
    {
        int workers = Math.Min(threads, options.KvHeads);
        if (workers == 1)
        {
            using AttentionWorkspace workspace = new(options, count, Math.Min(tokens, ChunkTokens));
            for (int head = 0; head < options.KvHeads; head++)
            {
                RunHead(options, count, tokens, head, queries, output, attention, workspace);
            }

            return;
        }

        // Spans cannot cross into the workers: the queries and outputs go through pooled arrays (a few KiB per token).
        float[] sharedQueries = ArrayPool<float>.Shared.Rent(queries.Length);
        float[] sharedOutput = ArrayPool<float>.Shared.Rent(output.Length);
        try
        {
            queries.CopyTo(sharedQueries);
            int length = queries.Length;
            Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, worker =>
            {
                using AttentionWorkspace workspace = new(options, count, Math.Min(tokens, ChunkTokens));
                for (int head = worker * options.KvHeads / workers; head < (worker + 1) * options.KvHeads / workers; head++)
                {
                    RunHead(options, count, tokens, head, sharedQueries.AsSpan(0, length), sharedOutput.AsSpan(0, length), attention, workspace);
                }
            });
            sharedOutput.AsSpan(0, output.Length).CopyTo(output);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(sharedQueries);
            ArrayPool<float>.Shared.Return(sharedOutput);
        }
    }

    /// <summary>Attends one KV head's query rows chunk by chunk: gather the rows, attend, scatter the outputs.</summary>
    private static void RunHead<T>(KvCacheOptions options, int count, int tokens, int head, ReadOnlySpan<float> queries, Span<float> output, T attention, AttentionWorkspace workspace)
        where T : IHeadAttention
    {
        int group = options.QueryHeadsPerKvHead, dim = options.HeadDim, width = options.QueryHeads * dim, rowWidth = group * dim;
        for (int first = 0; first < tokens; first += ChunkTokens)
        {
            int chunk = Math.Min(ChunkTokens, tokens - first);
            for (int t = 0; t < chunk; t++)
            {
                queries.Slice(((first + t) * width) + (head * rowWidth), rowWidth).CopyTo(workspace.Rows.AsSpan(t * rowWidth, rowWidth));
            }

            attention.AttendHead(head, count - tokens + first, chunk, workspace);
            for (int t = 0; t < chunk; t++)
            {
                workspace.Output.AsSpan(t * rowWidth, rowWidth).CopyTo(output.Slice(((first + t) * width) + (head * rowWidth), rowWidth));
            }
        }
    }
}

/// <summary>The pooled buffers of one thread's attention: for up to a chunk of query tokens of one KV head.</summary>
internal sealed class AttentionWorkspace : IDisposable
{
    public AttentionWorkspace(KvCacheOptions options, int count, int tokens)
    {
        int rows = tokens * options.QueryHeadsPerKvHead, dim = options.HeadDim;
        Scores = ArrayPool<float>.Shared.Rent(rows * count);
        Rows = ArrayPool<float>.Shared.Rent(rows * dim);
        Output = ArrayPool<float>.Shared.Rent(rows * dim);
        ScaledQueries = ArrayPool<float>.Shared.Rent(rows * dim);
        Factors = ArrayPool<float>.Shared.Rent(rows);
        Queries = ArrayPool<short>.Shared.Rent(rows * AttentionPrimitives.PaddedDim(dim));
    }

    /// <summary>Gets the scores of each query row, [rows, layer tokens].</summary>
    public float[] Scores { get; }

    /// <summary>Gets the query rows, [tokens, group, head dim].</summary>
    public float[] Rows { get; }

    /// <summary>Gets the outputs of the query rows, [tokens, group, head dim].</summary>
    public float[] Output { get; }

    /// <summary>Gets room for the query rows scaled (by 1 / sqrt(head dim) or channel scales).</summary>
    public float[] ScaledQueries { get; }

    /// <summary>Gets the factor of each int16 query row.</summary>
    public float[] Factors { get; }

    /// <summary>Gets the int16 query rows, [rows, padded head dim].</summary>
    public short[] Queries { get; }

    public void Dispose()
    {
        ArrayPool<float>.Shared.Return(Scores);
        ArrayPool<float>.Shared.Return(Rows);
        ArrayPool<float>.Shared.Return(Output);
        ArrayPool<float>.Shared.Return(ScaledQueries);
        ArrayPool<float>.Shared.Return(Factors);
        ArrayPool<short>.Shared.Return(Queries);
    }
}
