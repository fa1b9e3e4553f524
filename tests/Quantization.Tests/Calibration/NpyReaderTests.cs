using System.Buffers.Binary;
using System.Text;

namespace Quantization.Tests.Calibration;

/// <summary>Files made byte by byte as numpy writes them (format 1.0: magic, version, uint16 header length, header padded with spaces to a multiple of 64 and ended by a newline).</summary>
public class NpyReaderTests
{
    [Fact]
    public void LittleEndianFloat32_COrder()
    {
        NpyArray array = NpyReader.Parse(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", Floats(false, 1, 2, 3, 4, 5, 6)));
        Assert.Equal([2, 3], array.Shape);
        Assert.Equal([1f, 2f, 3f, 4f, 5f, 6f], array.Data);
    }

    [Fact]
    public void BigEndianFloat32_FortranOrder_IsReturnedInCOrder()
    {
        // Column-major [[1, 2, 3], [4, 5, 6]] is 1, 4, 2, 5, 3, 6.
        NpyArray array = NpyReader.Parse(Npy("{'descr': '>f4', 'fortran_order': True, 'shape': (2, 3), }", Floats(true, 1, 4, 2, 5, 3, 6)));
        Assert.Equal([2, 3], array.Shape);
        Assert.Equal([1f, 2f, 3f, 4f, 5f, 6f], array.Data);
    }

    [Fact]
    public void OtherDtypesAndVersions()
    {
        byte[] f8 = new byte[16];
        BinaryPrimitives.WriteDoubleBigEndian(f8, 0.5);
        BinaryPrimitives.WriteDoubleBigEndian(f8.AsSpan(8), -2.25);
        Assert.Equal([0.5f, -2.25f], NpyReader.Parse(Npy("{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }", f8)).Data);
        Assert.Equal([-1f, 127f, -128f], NpyReader.Parse(Npy("{'descr': '|i1', 'fortran_order': False, 'shape': (3,), }", [0xFF, 0x7F, 0x80])).Data);
        byte[] i2 = new byte[4];
        BinaryPrimitives.WriteInt16LittleEndian(i2, -300);
        BinaryPrimitives.WriteInt16LittleEndian(i2.AsSpan(2), 300);
        Assert.Equal([-300f, 300f], NpyReader.Parse(Npy("{'descr': '<i2', 'fortran_order': False, 'shape': (2,), }", i2)).Data);
        NpyArray scalar = NpyReader.Parse(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", Floats(false, 7)));
        Assert.Empty(scalar.Shape);
        Assert.Equal([7f], scalar.Data);
        Assert.Equal([1f, 2f], NpyReader.Parse(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", Floats(false, 1, 2), version: 2)).Data);
        NpyArray threeD = NpyReader.Parse(Npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2, 2), }", Floats(false, 0, 4, 2, 6, 1, 5, 3, 7)));
        Assert.Equal([0f, 1f, 2f, 3f, 4f, 5f, 6f, 7f], threeD.Data);
    }

    [Theory]
    [InlineData("truncated body")]
    [InlineData("header longer than the file")]
    [InlineData("header shorter than its dict")]
    [InlineData("bad magic")]
    [InlineData("unsupported dtype")]
    [InlineData("bad fortran_order")]
    [InlineData("repeated key")]
    [InlineData("missing shape")]
    [InlineData("overflowing shape")]
    [InlineData("extra bytes")]
    [InlineData("empty but huge shape")]
    [InlineData("not a dict")]
    [InlineData("version 9")]
    [InlineData("empty")]
    public void Malformed_IsRejectedWithAClearMessage(string problem)
    {
        const string Good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        byte[] data = Floats(false, 1, 2, 3, 4, 5, 6);
        byte[] file = problem switch
        {
            "truncated body" => Npy(Good, data)[..^5],
            "header longer than the file" => SetHeaderLength(Npy(Good, data), 60_000),
            "header shorter than its dict" => SetHeaderLength(Npy(Good, data), 20),
            "bad magic" => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'X', .. Npy(Good, data)[6..]],
            "unsupported dtype" => Npy("{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }", data),
            "bad fortran_order" => Npy("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 3), }", data),
            "repeated key" => Npy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data),
            "missing shape" => Npy("{'descr': '<f4', 'fortran_order': False, }", data),
            "overflowing shape" => Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2000000000, 2000000000), }", data),
            "extra bytes" => [.. Npy(Good, data), 0, 0, 0, 0],
            "empty but huge shape" => Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 2147483647, 2147483647), }", []),
            "not a dict" => Npy("descr=<f4", data),
            "version 9" => [.. Npy(Good, data)[..6], 9, .. Npy(Good, data)[7..]],
            _ => [],
        };
        InvalidDataException error = Assert.Throws<InvalidDataException>(() => NpyReader.Parse(file));
        Assert.False(string.IsNullOrWhiteSpace(error.Message));
    }

    [Fact]
    public void Read_NamesTheFile()
    {
        string path = Path.Combine(Path.GetTempPath(), $"bad-{Guid.NewGuid():N}.npy");
        File.WriteAllBytes(path, [1, 2, 3]);
        try
        {
            InvalidDataException error = Assert.Throws<InvalidDataException>(() => NpyReader.Read(path));
            Assert.Contains(path, error.Message, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>Builds a .npy file the way numpy does.</summary>
    internal static byte[] Npy(string dict, byte[] data, int version = 1)
    {
        int prefix = version == 1 ? 10 : 12;
        int total = prefix + dict.Length + 1;
        string header = dict + new string(' ', (64 - (total % 64)) % 64) + "\n";
        byte[] file = new byte[prefix + header.Length + data.Length];
        byte[] magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];
        magic.CopyTo(file, 0);
        file[6] = (byte)version;
        if (version == 1)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(8), (ushort)header.Length);
        }
        else
        {
            BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(8), (uint)header.Length);
        }

        Encoding.Latin1.GetBytes(header).CopyTo(file, prefix);
        data.CopyTo(file, prefix + header.Length);
        return file;
    }

    internal static byte[] Floats(bool bigEndian, params float[] values)
    {
        byte[] bytes = new byte[values.Length * 4];
        for (int i = 0; i < values.Length; i++)
        {
            if (bigEndian)
            {
                BinaryPrimitives.WriteSingleBigEndian(bytes.AsSpan(i * 4), values[i]);
            }
            else
            {
                BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * 4), values[i]);
            }
        }

        return bytes;
    }

    private static byte[] SetHeaderLength(byte[] file, ushort length)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(file.AsSpan(8), length);
        return file;
    }
}
