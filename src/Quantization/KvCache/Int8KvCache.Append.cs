using System.Buffers;
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Quantization;

// Appending: quantizing a block of tokens (static or dynamic scales), the KIVI float window and its flush, growing a layer.
public sealed partial class Int8KvCache
{
    /// <summary>
    /// Static or dynamic: rents the blocks the tokens need, then quantizes each token: static keys or values in one
    /// call over all of its KV heads (the scales of a layer are contiguous), dynamic ones row by row with their own
    /// scales; values straight into their blocks, keys through a row of scratch into their channel pairs.
    /// <see cref="Append(int, ReadOnlySpan{float}, ReadOnlySpan{float}, int)"/> checked that the data is finite and
    /// <see cref="Grow"/> rents all blocks or none, so a rejected append changes nothing.
    /// </summary>
    private void AppendQuantized(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        int dim = _options.HeadDim, heads = _options.KvHeads, width = _options.TokenWidth, tokensPerBlock = _options.BlockTokens;
        KvCacheScheme scheme = _options.Scheme;
        int start = _quantized[layer];
        Grow(layer, start + tokens);
        Span<sbyte> scratch = 2 * width <= MaxStackScratchBytes ? stackalloc sbyte[2 * width] : new sbyte[2 * width];
        Span<sbyte> keyRows = scratch[..width], valueRows = scratch[width..];
        for (int t = 0; t < tokens; t++)
        {
            int token = start + t, slot = token % tokensPerBlock;
            KvCacheBlock block = _blocks[layer][token / tokensPerBlock];
            ReadOnlySpan<float> tokenKeys = keys.Slice(t * width, width), tokenValues = values.Slice(t * width, width);
            if (scheme.HasStaticKeys)
            {
                QuantizeChannels(tokenKeys, scheme.KeyScales.Slice(layer * width, width), keyRows);
            }

            if (scheme.HasStaticValues)
            {
                QuantizeChannels(tokenValues, scheme.ValueScales.Slice(layer * width, width), valueRows);
            }

            for (int head = 0; head < heads; head++)
            {
                int source = head * dim, row = (head * tokensPerBlock) + slot;
                Span<sbyte> keyRow = keyRows.Slice(source, dim), valueRow = block.Values.AsSpan(row * dim, dim);
                if (!scheme.HasStaticKeys)
                {
                    block.KeyScales[row] = QuantizeRow(tokenKeys.Slice(source, dim), keyRow);
                }

                StoreKeys(block, head, slot, keyRow, 1);
                if (scheme.HasStaticValues)
                {
                    valueRows.Slice(source, dim).CopyTo(valueRow);
                }
                else
                {
                    block.ValueScales[row] = QuantizeRow(tokenValues.Slice(source, dim), valueRow);
                }
            }
        }

        _quantized[layer] = start + tokens;
    }

    /// <summary>
    /// Dynamic: quantizes a finite row with its own symmetric scale (the library's per-token scheme, the same bits as
    /// <see cref="QuantizationPrimitives.QuantizeDynamic(ReadOnlySpan{float}, ReadOnlySpan{int}, QuantizationScheme, Span{sbyte}, Span{float}, Span{sbyte}, string?)"/>)
    /// and returns the scale.
    /// </summary>
    private static float QuantizeRow(ReadOnlySpan<float> row, Span<sbyte> destination)
    {
        bool nonFinite = QuantizationPrimitives.MinMaxCore(row, out float min, out float max);
        Debug.Assert(!nonFinite, "Appends reject NaN and infinity.");
        ScaleAndZeroPoint pair = PerTokenScheme.Convention.Compute(min, max, PerTokenScheme.QuantMin, PerTokenScheme.QuantMax, symmetric: true, out float factor, nameof(row));
        QuantizationPrimitives.QuantizeLanes(PerTokenScheme.Convention, row, MemoryMarshal.AsBytes(destination), new UniformParameters(factor, 0), QuantizedType.Int8);
        return pair.Scale;
    }

    /// <summary>Static: quantizes finite rows with one (validated) scale per channel.</summary>
    private void QuantizeChannels(ReadOnlySpan<float> row, ReadOnlySpan<float> channelScales, Span<sbyte> destination) =>
        QuantizationPrimitives.QuantizeLanes(NumericConvention.Onnx, row, MemoryMarshal.AsBytes(destination), new PerLaneParameters(channelScales, _zeroPoints), QuantizedType.Int8);

    /// <summary>KIVI: copies tokens into the float window, quantizing the window each time it fills.</summary>
    private void AppendToWindow(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens)
    {
        int window = _options.Scheme.ResidentTokens, dim = _options.HeadDim;
        int flushes = (_resident[layer] + tokens) / window;
        Grow(layer, _quantized[layer] + (flushes * window));
        for (int t = 0; t < tokens; t++)
        {
            int slot = _resident[layer];
            for (int head = 0; head < _options.KvHeads; head++)
            {
                int source = ((t * _options.KvHeads) + head) * dim;
                int target = WindowOffset(layer, head, slot);
                keys.Slice(source, dim).CopyTo(_windowKeys.AsSpan(target, dim));
                values.Slice(source, dim).CopyTo(_windowValues.AsSpan(target, dim));
            }

            _resident[layer] = slot + 1;
            if (slot + 1 == window)
            {
                FlushWindow(layer);
            }
        }
    }

    /// <summary>
    /// KIVI: quantizes the full window at once, group by group of G tokens straight into the blocks <see cref="Grow"/>
    /// rented: keys with one scale per channel and group (the per-channel ranges of the group's rows), values with one
    /// scale per token and head; then empties the window. The appends checked the window's values, so they are finite.
    /// </summary>
    private void FlushWindow(int layer)
    {
        int window = _options.Scheme.ResidentTokens, dim = _options.HeadDim, group = _options.Scheme.GroupSize, tokensPerBlock = _options.BlockTokens;
        int start = _quantized[layer];
        sbyte[] rows = ArrayPool<sbyte>.Shared.Rent(group * dim);
        float[] ranges = ArrayPool<float>.Shared.Rent(3 * dim);
        try
        {
            Span<float> mins = ranges.AsSpan(0, dim), maxs = ranges.AsSpan(dim, dim), factors = ranges.AsSpan(2 * dim, dim);
            Span<sbyte> quantizedKeys = rows.AsSpan(0, group * dim);
            for (int head = 0; head < _options.KvHeads; head++)
            {
                ReadOnlySpan<float> keys = _windowKeys.AsSpan(WindowOffset(layer, head, 0), window * dim);
                ReadOnlySpan<float> values = _windowValues.AsSpan(WindowOffset(layer, head, 0), window * dim);
                for (int first = 0; first < window; first += group)
                {
                    int token = start + first, slot = token % tokensPerBlock, row = (head * tokensPerBlock) + slot;
                    KvCacheBlock block = _blocks[layer][token / tokensPerBlock];

                    // Ranges start at zero, as the library's per-group observers do (the symmetric scale only reads |x|).
                    ReadOnlySpan<float> groupKeys = keys.Slice(first * dim, group * dim);
                    mins.Clear();
                    maxs.Clear();
                    for (int t = 0; t < group; t += QuantizationPrimitives.MinMaxRowsPerCall)
                    {
                        int rowCount = Math.Min(QuantizationPrimitives.MinMaxRowsPerCall, group - t);
                        int folded = QuantizationPrimitives.AccumulateMinMax(groupKeys.Slice(t * dim, rowCount * dim), rowCount, mins, maxs);
                        Debug.Assert(folded == dim, "The appends checked the window's keys: they are finite.");
                    }

                    QuantizationPrimitives.FillFromRanges(PerTokenScheme, mins, maxs, block.KeyScales.AsSpan(KeyGroupOffset(head, slot / group), dim), _zeroPoints.AsSpan(0, dim), factors, nameof(keys)); // symmetric: the zero points it writes are 0
                    Span<byte> bytes = MemoryMarshal.AsBytes(quantizedKeys);
                    for (int t = 0; t < group; t++)
                    {
                        QuantizationPrimitives.QuantizeLanes(PerTokenScheme.Convention, groupKeys.Slice(t * dim, dim), bytes.Slice(t * dim, dim), new PerLaneParameters(factors, _zeroPoints), QuantizedType.Int8);
                    }

                    StoreKeys(block, head, slot, quantizedKeys, group);
                    for (int t = 0; t < group; t++)
                    {
                        block.ValueScales[row + t] = QuantizeRow(values.Slice((first + t) * dim, dim), block.Values.AsSpan((row + t) * dim, dim));
                    }
                }
            }

            _quantized[layer] = start + window;
            _resident[layer] = 0;
        }
        finally
        {
            ArrayPool<sbyte>.Shared.Return(rows);
            ArrayPool<float>.Shared.Return(ranges);
        }
    }

    /// <summary>Rents, all at once or not at all, the blocks a layer needs to hold <paramref name="quantizedTokens"/> quantized tokens.</summary>
    private void Grow(int layer, int quantizedTokens)
    {
        int needed = ((quantizedTokens + _options.BlockTokens - 1) / _options.BlockTokens) - _blocks[layer].Count;
        if (needed > 0)
        {
            _blocks[layer].AddRange(_pool.Rent(needed));
        }
    }
}
