using CsCheck;

namespace Quantization.Tests.Kernels;

/// <summary>
/// RMSNorm, the rotary embedding and the SwiGLU gate against scalar references written as Hugging Face Llama computes
/// them, bit for bit; CI reruns these on every SIMD tier, so they also prove that every tier gives the same bits.
/// </summary>
public class TransformerPrimitivesKernelTests
{
    private static readonly Gen<float[]> Values = Gen.Int[1, 300].SelectMany(n => Gen.Float[-8f, 8f].Array[n]);

    [Fact]
    public void RmsNorm_AnyLength_MatchesScalarReferenceBitForBit()
    {
        Gen.Select(Values, Gen.Float[0f, 1e-3f], Gen.Int[0, 1000]).Sample(t =>
        {
            (float[] x, float epsilon, int seed) = t;
            float[] weight = Random(seed, x.Length, 1f);
            float[] actual = new float[x.Length];
            TransformerPrimitives.RmsNorm(x, weight, epsilon, actual);

            // mean(x^2) as four interleaved partial sums of exact double squares, then y = w * (x * rsqrt(mean + eps)).
            double[] lanes = new double[4];
            for (int i = 0; i < x.Length; i++)
            {
                lanes[i < x.Length / 4 * 4 ? i % 4 : 0] += (double)x[i] * x[i];
            }

            float r = 1f / MathF.Sqrt((float)(((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) / x.Length) + epsilon);
            float[] expected = [.. x.Select((v, i) => weight[i] * (v * r))];
            Assert.Equal(expected, actual);
        }, iter: 200);
    }

    [Fact]
    public void RmsNorm_InPlace_GivesTheSameBits()
    {
        float[] x = Random(3, 97, 2f), weight = Random(4, 97, 1f), expected = new float[97];
        TransformerPrimitives.RmsNorm(x, weight, 1e-6f, expected);
        TransformerPrimitives.RmsNorm(x, weight, 1e-6f, x);
        Assert.Equal(expected, x);
    }

    [Fact]
    public void RmsNorm_IsCloseToTheDoubleDefinition()
    {
        float[] x = Random(7, 2048, 3f), weight = Random(8, 2048, 1f), actual = new float[2048];
        TransformerPrimitives.RmsNorm(x, weight, 1e-5f, actual);
        double r = 1 / Math.Sqrt((x.Sum(v => (double)v * v) / x.Length) + 1e-5);
        for (int i = 0; i < x.Length; i++)
        {
            Assert.Equal(weight[i] * x[i] * r, actual[i], 1e-5 * Math.Abs(actual[i]) + 1e-7);
        }
    }

    [Fact]
    public void RotaryEmbedding_AnyShape_MatchesHuggingFaceRotateHalfBitForBit()
    {
        Gen.Select(Gen.Int[1, 70], Gen.Int[1, 6], Gen.Int[0, 5000], Gen.Int[0, 1000]).Sample(t =>
        {
            (int half, int heads, int position, int seed) = t;
            int dim = 2 * half;
            float[] inverse = new float[half], cos = new float[half], sin = new float[half];
            TransformerPrimitives.RotaryInverseFrequencies(dim, 10000f, inverse);
            TransformerPrimitives.RotaryAngles(position, inverse, cos, sin);
            float[] x = Random(seed, heads * dim, 2f), actual = (float[])x.Clone();
            TransformerPrimitives.ApplyRotaryEmbedding(actual, cos, sin);

            for (int i = 0; i < half; i++)
            {
                // inv_freq = 1 / base^(arange(0, dim, 2) / dim); freqs = position * inv_freq; emb = cat(freqs, freqs).
                Assert.Equal(1f / MathF.Pow(10000f, (float)(2 * i) / dim), inverse[i]);
                Assert.Equal(MathF.Cos(position * inverse[i]), cos[i]);
                Assert.Equal(MathF.Sin(position * inverse[i]), sin[i]);
            }

            // q * cos + rotate_half(q) * sin, with rotate_half(q) = cat(-q2, q1).
            for (int h = 0; h < heads; h++)
            {
                for (int d = 0; d < dim; d++)
                {
                    float value = x[(h * dim) + d];
                    float rotated = d < half ? -x[(h * dim) + d + half] : x[(h * dim) + d - half];
                    Assert.Equal((value * cos[d % half]) + (rotated * sin[d % half]), actual[(h * dim) + d]);
                }
            }
        }, iter: 200);
    }

    [Fact]
    public void RotaryEmbedding_PositionZero_IsTheIdentity_AndRotationsKeepTheNorm()
    {
        float[] inverse = new float[32], cos = new float[32], sin = new float[32];
        TransformerPrimitives.RotaryInverseFrequencies(64, 500000f, inverse);
        TransformerPrimitives.RotaryAngles(0, inverse, cos, sin);
        float[] x = Random(1, 4 * 64, 1f), y = (float[])x.Clone();
        TransformerPrimitives.ApplyRotaryEmbedding(y, cos, sin);
        Assert.Equal(x, y);

        TransformerPrimitives.RotaryAngles(1000, inverse, cos, sin);
        TransformerPrimitives.ApplyRotaryEmbedding(y, cos, sin);
        Assert.Equal(x.Sum(v => (double)v * v), y.Sum(v => (double)v * v), 1e-4);
    }

    [Fact]
    public void SiluGate_AnyLength_MatchesScalarReferenceBitForBit()
    {
        Gen.Select(Values, Gen.Int[0, 1000]).Sample(t =>
        {
            (float[] gate, int seed) = t;
            float[] up = Random(seed, gate.Length, 2f), actual = new float[gate.Length];
            TransformerPrimitives.SiluGate(gate, up, actual);
            Assert.Equal([.. gate.Select((g, i) => g / (1f + MathF.Exp(-g)) * up[i])], actual);

            TransformerPrimitives.SiluGate(gate, up, gate); // in place
            Assert.Equal(actual, gate);
        }, iter: 200);
    }

    [Fact]
    public void BadArguments_Throw()
    {
        float[] four = new float[4], two = new float[2], three = new float[3];
        Assert.Throws<ArgumentException>(() => TransformerPrimitives.RmsNorm([], [], 1e-5f, []));
        Assert.Throws<ArgumentException>(() => TransformerPrimitives.RmsNorm(four, three, 1e-5f, four));
        Assert.Throws<ArgumentException>(() => TransformerPrimitives.RmsNorm(four, four, 1e-5f, three));
        Assert.Throws<ArgumentOutOfRangeException>(() => TransformerPrimitives.RmsNorm(four, four, -1f, four));
        Assert.Throws<ArgumentOutOfRangeException>(() => TransformerPrimitives.RmsNorm(four, four, float.NaN, four));
        Assert.Throws<ArgumentOutOfRangeException>(() => TransformerPrimitives.RotaryInverseFrequencies(3, 10000f, two));
        Assert.Throws<ArgumentOutOfRangeException>(() => TransformerPrimitives.RotaryInverseFrequencies(0, 10000f, []));
        Assert.Throws<ArgumentOutOfRangeException>(() => TransformerPrimitives.RotaryInverseFrequencies(4, 1f, two));
        Assert.Throws<ArgumentException>(() => TransformerPrimitives.RotaryInverseFrequencies(4, 10000f, three));
        Assert.Throws<ArgumentOutOfRangeException>(() => TransformerPrimitives.RotaryAngles(-1, two, two, two));
        Assert.Throws<ArgumentException>(() => TransformerPrimitives.RotaryAngles(1, [], [], []));
        Assert.Throws<ArgumentException>(() => TransformerPrimitives.RotaryAngles(1, two, three, two));
        Assert.Throws<ArgumentException>(() => TransformerPrimitives.ApplyRotaryEmbedding(three, two, two));
        Assert.Throws<ArgumentException>(() => TransformerPrimitives.ApplyRotaryEmbedding(four, two, three));
        Assert.Throws<ArgumentException>(() => TransformerPrimitives.ApplyRotaryEmbedding(four, [], []));
        Assert.Throws<ArgumentException>(() => TransformerPrimitives.SiluGate(four, three, four));
        Assert.Throws<ArgumentException>(() => TransformerPrimitives.SiluGate(four, four, three));
    }

    private static float[] Random(int seed, int length, float scale)
    {
        Random random = new(seed);
        return [.. Enumerable.Range(0, length).Select(_ => (float)((random.NextDouble() * 2) - 1) * scale)];
    }
}
