using System.Runtime.InteropServices;

namespace Quantization.Tests.Kernels;

public class DequantizeKernelTests
{
    [Theory]
    [InlineData(true, 0.0123f, -7)]
    [InlineData(false, 0.5f, 131)]
    [InlineData(true, 1e-39f, 0)]
    [InlineData(false, 3.4e36f, 255)]
    public void Dequantize_EveryLengthAndOffset_MatchesScalarReference(bool signed, float scale, int zeroPoint)
    {
        Random random = new(11);
        for (int length = 0; length <= 260; length++)
        {
            for (int offset = 0; offset < 4; offset++)
            {
                byte[] data = new byte[length + offset];
                random.NextBytes(data);
                if (length > 1)
                {
                    data[offset] = signed ? (byte)0x80 : (byte)0;
                    data[^1] = signed ? (byte)0x7F : (byte)0xFF;
                }

                ReadOnlySpan<byte> source = data.AsSpan(offset);
                float[] actual = new float[length + 1];
                Span<float> destination = actual.AsSpan(1, length);
                if (signed)
                {
                    QuantizationPrimitives.Dequantize(MemoryMarshal.Cast<byte, sbyte>(source), destination, scale, (sbyte)zeroPoint);
                }
                else
                {
                    QuantizationPrimitives.Dequantize(source, destination, scale, (byte)zeroPoint);
                }

                for (int i = 0; i < length; i++)
                {
                    int q = signed ? (sbyte)source[i] : source[i];
                    float expected = TestUtilities.ScalarReference.Dequantize(q, scale, zeroPoint);
                    Assert.True(
                        BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(destination[i]),
                        $"length {length}, offset {offset}, index {i}: q = {q} gave {destination[i]:R}, expected {expected:R}");
                }
            }
        }
    }

    [Fact]
    public void Dequantize_AllByteValues_InverseOfQuantizeOnTheGrid()
    {
        sbyte[] all = Enumerable.Range(-128, 256).Select(v => (sbyte)v).ToArray();
        float[] real = new float[256];
        QuantizationPrimitives.Dequantize(all, real, 0.25f, 3);
        sbyte[] back = new sbyte[256];
        QuantizationPrimitives.Quantize(real, back, 0.25f, 3);
        Assert.Equal(all, back);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    public void Dequantize_OutputsLargeEnoughToStream_MatchScalarReference(int offset)
    {
        // 4.2 M floats (over 16 MiB) take the streaming-store path; the offset makes its unaligned head and tail work.
        const int Rows = 26_215, Columns = 160;
        Random random = new(offset);
        byte[] data = new byte[(Rows * Columns) + offset];
        random.NextBytes(data);
        ReadOnlySpan<sbyte> source = MemoryMarshal.Cast<byte, sbyte>(data.AsSpan(offset));
        float[] actual = new float[source.Length + offset];
        Span<float> destination = actual.AsSpan(offset);

        QuantizationPrimitives.Dequantize(source, destination, 0.37f, -5);
        for (int i = 0; i < source.Length; i++)
        {
            Assert.Equal(TestUtilities.ScalarReference.Dequantize(source[i], 0.37f, -5), destination[i]);
        }

        float[] scales = Enumerable.Range(0, Columns).Select(c => 0.01f * (c + 1)).ToArray();
        sbyte[] zeroPoints = Enumerable.Range(0, Columns).Select(c => (sbyte)((c % 9) - 4)).ToArray();
        QuantizationPrimitives.Dequantize(source, [Rows, Columns], QuantizationGranularity.PerChannel(1), scales, zeroPoints, destination);
        for (int i = 0; i < source.Length; i++)
        {
            int c = i % Columns;
            Assert.Equal(TestUtilities.ScalarReference.Dequantize(source[i], scales[c], zeroPoints[c]), destination[i]);
        }
    }

    [Fact]
    public void Dequantize_LargeOutputNotAlignedToFloats_DoesNotStream()
    {
        // A float span one byte off its natural alignment (a memory-mapped file, say) cannot take aligned streaming stores.
        const int Count = 4_400_000;
        sbyte[] source = Enumerable.Range(0, Count).Select(i => (sbyte)(i * 7)).ToArray();
        byte[] buffer = new byte[(Count * sizeof(float)) + 1];
        Span<float> destination = MemoryMarshal.Cast<byte, float>(buffer.AsSpan(1));
        QuantizationPrimitives.Dequantize(source, destination, 0.5f, 1);
        for (int i = 0; i < Count; i += 997)
        {
            Assert.Equal((source[i] - 1) * 0.5f, destination[i]);
        }
    }
}
