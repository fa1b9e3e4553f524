using System.Numerics.Tensors;

namespace Quantization;

// Attention on the int8 data: one KV head's query rows, block by block, with prefetching of the next block.
public sealed partial class Int8KvCache
{
    /// <summary>
    /// Attention of one KV head's query rows (<paramref name="tokens"/> tokens x group, token t seeing the first
    /// <c>before + t + 1</c> tokens): scores block by block (each block's keys read once for every row that sees it),
    /// the causal softmax, then the weighted values block by block.
    /// </summary>
    private void AttendHead(int layer, int head, int before, int tokens, AttentionWorkspace workspace)
    {
        KvCacheScheme scheme = _options.Scheme;
        int group = _options.QueryHeadsPerKvHead, dim = _options.HeadDim, paddedDim = AttentionPrimitives.PaddedDim(dim), tokensPerBlock = _options.BlockTokens;
        int rows = tokens * group, count = before + tokens, quantized = Math.Min(_quantized[layer], count);
        float inverseSqrtDim = 1f / MathF.Sqrt(dim);
        Span<float> scores = workspace.Scores.AsSpan(0, rows * count);
        ReadOnlySpan<float> queries = workspace.Rows.AsSpan(0, rows * dim);
        Span<float> output = workspace.Output.AsSpan(0, rows * dim);
        ReadOnlySpan<float> channelScales = scheme.HasStaticKeys
            ? scheme.KeyScales.Slice(((layer * _options.KvHeads) + head) * dim, dim)
            : [];
        if (scheme.Kind != KvCacheSchemeKind.Kivi)
        {
            PrepareQueries(queries, channelScales, inverseSqrtDim, workspace, 0, rows);
        }

        bool prefetch = (long)_quantized[layer] * _options.TokenWidth * 2 >= PrefetchBytes;
        for (int first = 0, b = 0; first < quantized; first += tokensPerBlock, b++)
        {
            KvCacheBlock block = _blocks[layer][b];
            int blockTokens = Math.Min(tokensPerBlock, quantized - first), row = FirstRow(first, before, group);
            ReadOnlySpan<sbyte> keys = block.Keys.AsSpan(head * tokensPerBlock * paddedDim, tokensPerBlock * paddedDim);
            if (prefetch)
            {
                PrefetchNext(layer, head, b, keys: true);
            }

            if (scheme.Kind == KvCacheSchemeKind.Kivi)
            {
                int groupSize = scheme.GroupSize;
                for (int g = 0; g * groupSize < blockTokens; g++)
                {
                    PrepareQueries(queries, block.KeyScales.AsSpan(KeyGroupOffset(head, g), dim), inverseSqrtDim, workspace, row, rows);
                    AttentionPrimitives.KeyScores(keys[(g * groupSize * 2)..], tokensPerBlock, Math.Min(groupSize, blockTokens - (g * groupSize)), workspace.Queries.AsSpan(row * paddedDim, (rows - row) * paddedDim), workspace.Factors.AsSpan(row, rows - row), [], scores[((row * count) + first + (g * groupSize))..], count);
                }
            }
            else
            {
                ReadOnlySpan<float> tokenScales = !scheme.HasStaticKeys ? block.KeyScales.AsSpan(head * tokensPerBlock, blockTokens) : [];
                AttentionPrimitives.KeyScores(keys, tokensPerBlock, blockTokens, workspace.Queries.AsSpan(row * paddedDim, (rows - row) * paddedDim), workspace.Factors.AsSpan(row, rows - row), tokenScales, scores[((row * count) + first)..], count);
            }
        }

        if (count > quantized)
        {
            Span<float> scaled = workspace.ScaledQueries.AsSpan(0, rows * dim);
            TensorPrimitives.Multiply(queries, inverseSqrtDim, scaled);
            AttentionPrimitives.CausalDots(_windowKeys.AsSpan(WindowOffset(layer, head, 0), (count - quantized) * dim), quantized, scaled, dim, group, before, scores, count);
        }

        AttentionPrimitives.CausalSoftmax(scores, count, group, before);
        output.Clear();
        for (int first = 0, b = 0; first < quantized; first += tokensPerBlock, b++)
        {
            KvCacheBlock block = _blocks[layer][b];
            int blockTokens = Math.Min(tokensPerBlock, quantized - first), row = FirstRow(first, before, group);
            if (prefetch)
            {
                PrefetchNext(layer, head, b, keys: false);
            }

            if (!scheme.HasStaticValues)
            {
                ReadOnlySpan<float> valueScales = block.ValueScales.AsSpan(head * tokensPerBlock, blockTokens);
                for (int r = row; r < rows; r++)
                {
                    Span<float> weights = scores.Slice((r * count) + first, blockTokens);
                    TensorPrimitives.Multiply(weights, valueScales, weights);
                }
            }

            AttentionPrimitives.WeightedSum(block.Values.AsSpan(head * tokensPerBlock * dim, blockTokens * dim), dim, scores[((row * count) + first)..], count, rows - row, output[(row * dim)..]);
        }

        if (scheme.HasStaticValues)
        {
            ReadOnlySpan<float> valueScales = scheme.ValueScales.Slice(((layer * _options.KvHeads) + head) * dim, dim);
            for (int r = 0; r < rows; r++)
            {
                TensorPrimitives.Multiply(output.Slice(r * dim, dim), valueScales, output.Slice(r * dim, dim));
            }
        }

        if (count > quantized)
        {
            AttentionPrimitives.WeightedSum(_windowValues.AsSpan(WindowOffset(layer, head, 0), (count - quantized) * dim), dim, scores[quantized..], count, rows, output);
        }
    }

    /// <summary>The first query row that sees a token at <paramref name="first"/>: token t sees <c>before + t + 1</c> tokens.</summary>
    private static int FirstRow(int first, int before, int group) => Math.Max(0, first - before) * group;

    /// <summary>Asks for a KV head's keys (and their scales) or values of the block after <paramref name="block"/>, if there is one.</summary>
    private void PrefetchNext(int layer, int head, int block, bool keys)
    {
        if (block + 1 >= _blocks[layer].Count)
        {
            return;
        }

        KvCacheBlock next = _blocks[layer][block + 1];
        sbyte[] data = keys ? next.Keys : next.Values;
        int rows = data.Length / _options.KvHeads;
        AttentionPrimitives.Prefetch<sbyte>(data.AsSpan(head * rows, rows));
        float[] scales = keys ? next.KeyScales : next.ValueScales;
        int perHead = scales.Length / _options.KvHeads;
        AttentionPrimitives.Prefetch<float>(scales.AsSpan(head * perHead, perHead));
    }

    /// <summary>Quantizes query rows [first, rows) (channel scales folded in) to int16 and gets the factor that turns their int dots into scores.</summary>
    private static void PrepareQueries(ReadOnlySpan<float> queries, ReadOnlySpan<float> channelScales, float inverseSqrtDim, AttentionWorkspace workspace, int first, int rows)
    {
        int dim = channelScales.IsEmpty ? queries.Length / rows : channelScales.Length, paddedDim = AttentionPrimitives.PaddedDim(dim);
        for (int r = first; r < rows; r++)
        {
            float scale = AttentionPrimitives.QuantizeQuery(queries.Slice(r * dim, dim), channelScales, workspace.ScaledQueries.AsSpan(r * dim, dim), workspace.Queries.AsSpan(r * paddedDim, paddedDim));
            workspace.Factors[r] = scale * inverseSqrtDim;
        }
    }

    /// <summary>The cache as the attention driver sees it: one layer's <see cref="AttendHead"/>.</summary>
    private readonly struct HeadAttention(Int8KvCache cache, int layer) : IHeadAttention
    {
        public void AttendHead(int head, int before, int tokens, AttentionWorkspace workspace) => cache.AttendHead(layer, head, before, tokens, workspace);
    }
}
