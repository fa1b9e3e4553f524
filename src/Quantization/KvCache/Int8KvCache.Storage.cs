namespace Quantization;

// Block layout: where a quantized row is stored (values as rows, keys in channel pairs, scales) and how it is read back.
public sealed partial class Int8KvCache
{
    /// <summary>
    /// Stores one quantized (token, head) row and its per-token scales (ignored by schemes without them): the values as a
    /// row, the keys in channel pairs (see <see cref="AttentionPrimitives.KeyScores"/>).
    /// </summary>
    private void StoreRow(int layer, int token, int head, ReadOnlySpan<sbyte> keys, ReadOnlySpan<sbyte> values, float keyScale, float valueScale)
    {
        int tokensPerBlock = _options.BlockTokens, slot = token % tokensPerBlock, dim = _options.HeadDim;
        KvCacheBlock block = _blocks[layer][token / tokensPerBlock];
        values.CopyTo(block.Values.AsSpan(((head * tokensPerBlock) + slot) * dim));
        Span<sbyte> pairs = block.Keys.AsSpan(head * tokensPerBlock * AttentionPrimitives.PaddedDim(dim));
        for (int d = 0; d < dim; d += 2)
        {
            int at = ((d / 2 * tokensPerBlock) + slot) * 2;
            pairs[at] = keys[d];
            pairs[at + 1] = d + 1 < dim ? keys[d + 1] : (sbyte)0;
        }

        if (_options.Scheme.Kind == KvCacheSchemeKind.DynamicPerTokenHead)
        {
            block.KeyScales[(head * tokensPerBlock) + slot] = keyScale;
        }

        if (!_options.Scheme.HasStaticValues)
        {
            block.ValueScales[(head * tokensPerBlock) + slot] = valueScale;
        }
    }

    /// <summary>Reads one stored key row back from its channel pairs.</summary>
    private void LoadKeyRow(KvCacheBlock block, int head, int slot, Span<sbyte> row)
    {
        int tokensPerBlock = _options.BlockTokens;
        ReadOnlySpan<sbyte> pairs = block.Keys.AsSpan(head * tokensPerBlock * AttentionPrimitives.PaddedDim(row.Length));
        for (int d = 0; d < row.Length; d++)
        {
            row[d] = pairs[((d / 2 * tokensPerBlock) + slot) * 2 + (d & 1)];
        }
    }

    private int WindowOffset(int layer, int head, int slot) =>
        (((layer * _options.KvHeads) + head) * _options.Scheme.ResidentTokens + slot) * _options.HeadDim;

    private int KeyGroupOffset(int head, int groupSlot) =>
        ((head * (_options.BlockTokens / _options.Scheme.GroupSize)) + groupSlot) * _options.HeadDim;

    private void Dequantize(int layer, int head, Span<float> destination, bool keys)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int count = GetCount(layer);
        KvCacheArguments.ValidateHeadRows(_options, layer, head, count, destination);
        KvCacheScheme scheme = _options.Scheme;
        int dim = _options.HeadDim, tokensPerBlock = _options.BlockTokens, quantized = _quantized[layer];
        int channel = ((layer * _options.KvHeads) + head) * dim;
        sbyte[] keyRow = new sbyte[dim];
        for (int t = 0; t < quantized; t++)
        {
            KvCacheBlock block = _blocks[layer][t / tokensPerBlock];
            int slot = t % tokensPerBlock;
            ReadOnlySpan<sbyte> row = block.Values.AsSpan(((head * tokensPerBlock) + slot) * dim, dim);
            if (keys)
            {
                LoadKeyRow(block, head, slot, keyRow);
                row = keyRow;
            }

            Span<float> target = destination.Slice(t * dim, dim);
            if (keys ? scheme.HasStaticKeys : scheme.HasStaticValues)
            {
                DequantizeRow(row, (keys ? scheme.KeyScales : scheme.ValueScales).Slice(channel, dim), target);
            }
            else if (keys && scheme.Kind == KvCacheSchemeKind.Kivi)
            {
                DequantizeRow(row, block.KeyScales.AsSpan(KeyGroupOffset(head, slot / scheme.GroupSize), dim), target);
            }
            else
            {
                QuantizationPrimitives.Dequantize(row, target, (keys ? block.KeyScales : block.ValueScales)[(head * tokensPerBlock) + slot]);
            }
        }

        int resident = count - quantized;
        if (resident > 0)
        {
            (keys ? _windowKeys : _windowValues).AsSpan(WindowOffset(layer, head, 0), resident * dim).CopyTo(destination[(quantized * dim)..]);
        }
    }

    /// <summary>Dequantizes a row with one scale per element: <c>q[d] * scales[d]</c>, the library's dequantize convention.</summary>
    private static void DequantizeRow(ReadOnlySpan<sbyte> row, ReadOnlySpan<float> scales, Span<float> destination)
    {
        for (int d = 0; d < row.Length; d++)
        {
            destination[d] = NumericConvention.Dequantize(row[d], scales[d], 0);
        }
    }
}
